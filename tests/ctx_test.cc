// SPDX-License-Identifier: MIT
//
// tests/ctx_test.cc - the stack switch (runtime/ctx.h, ctx_<arch>.S).
//
// Each test runs fibers on plain mmap'd stacks (no stack pool, so a bug
// here points at the switch alone) and checks one property of the switch:
// control flow, register and FP-state preservation, ABI alignment, thread
// migration, and silence of ASan/TSan/valgrind across switches. Fiber
// bodies use EXPECT_* only (an ASSERT_* would return from the entry,
// which is a BUG by contract) and end with weft__ctx_switch_final().

#include <gtest/gtest.h>

#include <cfenv>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif

extern "C" {
#include "runtime/ctx.h"
}

namespace
{

#if defined(WEFT__ASAN) || defined(WEFT__TSAN)
constexpr size_t kScale = 4; // instrumented frames are bigger (G4)
#else
constexpr size_t kScale = 1;
#endif
constexpr size_t kStackSize = (256u << 10) * kScale;

// An mmap'd stack with a PROT_NONE page below it.
class TestStack
{
public:
	explicit TestStack(size_t size = kStackSize) : size_(size)
	{
		page_ = (size_t)sysconf(_SC_PAGESIZE);
		base_ = mmap(nullptr, size_ + page_, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
		if (base_ == MAP_FAILED)
			abort();
		mprotect(base_, page_, PROT_NONE);
	}
	~TestStack()
	{
		munmap(base_, size_ + page_);
	}
	TestStack(const TestStack &) = delete;
	TestStack &operator=(const TestStack &) = delete;
	void *lo() const
	{
		return (char *)base_ + page_;
	}
	size_t size() const
	{
		return size_;
	}

private:
	void *base_;
	size_t size_, page_;
};

// A fiber with its own stack; destroyed (tool state) when it goes away.
struct Fiber {
	TestStack stack;
	weft__ctx ctx;
	Fiber(void (*entry)(void *), void *arg)
	{
		weft__ctx_make(&ctx, stack.lo(), stack.size(), entry, arg);
	}
	~Fiber()
	{
		weft__ctx_destroy(&ctx);
	}
};

// ---- control flow ----------------------------------------------------------

struct Counter {
	weft__ctx main, *self;
	long value = 0;
	long rounds = 0;
};

void count_entry(void *arg)
{
	Counter *c = static_cast<Counter *>(arg);

	for (long i = 0; i < c->rounds; i++) {
		c->value++;
		weft__ctx_switch(c->self, &c->main);
	}
	c->value = -1; // finished marker
	weft__ctx_switch_final(c->self, &c->main);
}

TEST(Ctx, SwitchesIntoFiberAndBackManyTimes)
{
	Counter c;
	c.rounds = 100000;
	weft__ctx_init_thread(&c.main);
	Fiber f(count_entry, &c);
	c.self = &f.ctx;

	for (long i = 1; i <= c.rounds; i++) {
		weft__ctx_switch(&c.main, &f.ctx);
		ASSERT_EQ(c.value, i);
	}
	weft__ctx_switch(&c.main, &f.ctx);
	EXPECT_EQ(c.value, -1);
}

struct ArgProbe {
	weft__ctx main, *self;
	void *seen = nullptr;
	int magic = 0;
};

void arg_entry(void *arg)
{
	ArgProbe *p = static_cast<ArgProbe *>(arg);

	p->seen = arg;
	p->magic = 0x5eed;
	weft__ctx_switch_final(p->self, &p->main);
}

TEST(Ctx, ArgumentReachesEntry)
{
	ArgProbe p;
	weft__ctx_init_thread(&p.main);
	Fiber f(arg_entry, &p);
	p.self = &f.ctx;

	weft__ctx_switch(&p.main, &f.ctx);
	EXPECT_EQ(p.seen, &p);
	EXPECT_EQ(p.magic, 0x5eed);
}

// Two fibers take turns through a third (scheduler) context.
struct PingPong {
	weft__ctx sched;
	weft__ctx *fib[2];
	std::string log;
	int rounds = 1000;
	int finished = 0;
};

struct PingPongArg {
	PingPong *pp;
	int id;
};

void ping_pong_entry(void *arg)
{
	PingPongArg *a = static_cast<PingPongArg *>(arg);
	PingPong *pp = a->pp;

	for (int i = 0; i < pp->rounds; i++) {
		pp->log.push_back(a->id ? 'b' : 'a');
		weft__ctx_switch(pp->fib[a->id], &pp->sched);
	}
	pp->finished++;
	weft__ctx_switch_final(pp->fib[a->id], &pp->sched);
}

TEST(Ctx, TwoFibersPingPongThroughScheduler)
{
	PingPong pp;
	PingPongArg a0{ &pp, 0 }, a1{ &pp, 1 };
	weft__ctx_init_thread(&pp.sched);
	Fiber f0(ping_pong_entry, &a0), f1(ping_pong_entry, &a1);
	pp.fib[0] = &f0.ctx;
	pp.fib[1] = &f1.ctx;

	// The scheduler loop: resume whoever is next until both are done.
	for (int turn = 0; pp.finished < 2; turn++)
		weft__ctx_switch(&pp.sched, pp.fib[turn & 1]);

	std::string want;
	for (int i = 0; i < pp.rounds; i++)
		want += "ab";
	EXPECT_EQ(pp.log, want);
}

// ---- registers -------------------------------------------------------------

// Many live integer and FP values across every switch: the compiler must
// keep them in callee-saved registers (rbx, rbp, r12-r15; x19-x28, d8-d15)
// or spill them. Both sides run the same mix with different seeds, so a
// register the swap fails to restore shows up as a wrong checksum.
struct Mix {
	weft__ctx *me, *other;
	uint64_t seed;
	int rounds;
	uint64_t result_int;
	double result_fp;
};

__attribute__((noinline)) void mix(Mix *m, bool do_switch)
{
	uint64_t a = m->seed, b = a * 3 + 1, c = b ^ 0x9e3779b97f4a7c15ull,
		 d = c + 7, e = d * 5, f = e ^ a, g = f + b, h = g * 11,
		 i = h ^ c, j = i + d, k = j * 13, l = k ^ e;
	double x = (double)(m->seed & 0xff) + 0.5, y = x * 1.25, z = y - 3.0,
	       w = z * 0.75, v = w + x, u = v * 0.5, t = u + 2.0, s = t * 1.5;

	for (int r = 0; r < m->rounds; r++) {
		if (do_switch)
			weft__ctx_switch(m->me, m->other);
		a += l;
		b ^= a;
		c += b * 3;
		d ^= c >> 7;
		e += d;
		f ^= e << 3;
		g += f;
		h ^= g >> 11;
		i += h;
		j ^= i * 5;
		k += j;
		l ^= k >> 13;
		x = std::fmod(x * 1.0001 + s, 1000.0);
		y = std::fmod(y + x * 0.5, 1000.0);
		z = std::fmod(z * 0.999 + y, 1000.0);
		w = std::fmod(w + z * 0.25, 1000.0);
		v = std::fmod(v * 1.001 + w, 1000.0);
		u = std::fmod(u + v * 0.125, 1000.0);
		t = std::fmod(t * 0.9999 + u, 1000.0);
		s = std::fmod(s + t * 0.0625, 1000.0);
	}
	m->result_int = a ^ b ^ c ^ d ^ e ^ f ^ g ^ h ^ i ^ j ^ k ^ l;
	m->result_fp = x + y + z + w + v + u + t + s;
}

struct MixFiber {
	Mix m;
	weft__ctx *sched;
};

void mix_entry(void *arg)
{
	MixFiber *mf = static_cast<MixFiber *>(arg);

	mix(&mf->m, true);
	weft__ctx_switch_final(mf->m.me, mf->sched);
}

TEST(Ctx, CalleeSavedRegistersSurviveSwitches)
{
	weft__ctx sched;
	weft__ctx_init_thread(&sched);
	MixFiber mf{};
	Fiber f(mix_entry, &mf);
	Mix main_side{};

	main_side.me = &sched;
	main_side.other = &f.ctx;
	main_side.seed = 0x1234567;
	main_side.rounds = 2000;
	mf.m.me = &f.ctx;
	mf.m.other = &sched;
	mf.m.seed = 0xfedcba98;
	mf.m.rounds = main_side.rounds;
	mf.sched = &sched;

	// Each side switches once per round; the fiber's first round starts
	// it, and its last round still needs one more switch in, after which
	// it finishes and switches back for good.
	mix(&main_side, true);
	weft__ctx_switch(&sched, &f.ctx);

	Mix ref_main = main_side, ref_fib = mf.m;
	mix(&ref_main, false);
	mix(&ref_fib, false);
	EXPECT_EQ(main_side.result_int, ref_main.result_int);
	EXPECT_EQ(main_side.result_fp, ref_main.result_fp);
	EXPECT_EQ(mf.m.result_int, ref_fib.result_int);
	EXPECT_EQ(mf.m.result_fp, ref_fib.result_fp);
}

#if defined(__x86_64__)
// The same at the instruction level: each side fills rbx, rbp and r12-r15
// with its own marks, swaps, and records what it finds when it resumes.
//   void marked_swap(void **save, void *to, uint64_t out[6], uint64_t mark)
extern "C" void weft_test_marked_swap(void **save, void *to, uint64_t *out,
				      uint64_t mark);
__asm__(".text\n"
	".p2align 4\n"
	".type weft_test_marked_swap, @function\n"
	"weft_test_marked_swap:\n"
	"	endbr64\n"
	"	push %rbp\n"
	"	push %rbx\n"
	"	push %r12\n"
	"	push %r13\n"
	"	push %r14\n"
	"	push %r15\n"
	"	push %rdx\n" /* out; rsp % 16 == 0 for the call */
	"	lea 1(%rcx), %rbx\n"
	"	lea 2(%rcx), %rbp\n"
	"	lea 3(%rcx), %r12\n"
	"	lea 4(%rcx), %r13\n"
	"	lea 5(%rcx), %r14\n"
	"	lea 6(%rcx), %r15\n"
	"	call weft__ctx_swap@PLT\n"
	"	pop %rdx\n"
	"	mov %rbx, 0(%rdx)\n"
	"	mov %rbp, 8(%rdx)\n"
	"	mov %r12, 16(%rdx)\n"
	"	mov %r13, 24(%rdx)\n"
	"	mov %r14, 32(%rdx)\n"
	"	mov %r15, 40(%rdx)\n"
	"	pop %r15\n"
	"	pop %r14\n"
	"	pop %r13\n"
	"	pop %r12\n"
	"	pop %rbx\n"
	"	pop %rbp\n"
	"	ret\n"
	".size weft_test_marked_swap, .-weft_test_marked_swap\n");

struct Marked {
	weft__ctx *self, *back;
	uint64_t seen[6];
};

[[maybe_unused]] void marked_entry(void *arg)
{
	Marked *mk = static_cast<Marked *>(arg);

	// Raw swaps (no tool hooks), so this test runs without sanitizers
	// only; the first switch in was a hooked one, so is the last out.
	weft_test_marked_swap(&mk->self->sp, mk->back->sp, mk->seen,
			      0xf1be2000);
	weft__ctx_switch_final(mk->self, mk->back);
}

TEST(Ctx, RawSwapRestoresEachCalleeSavedRegister)
{
#if defined(WEFT__ASAN) || defined(WEFT__TSAN)
	GTEST_SKIP() << "raw swaps bypass the sanitizer fiber hooks";
#else
	weft__ctx sched;
	weft__ctx_init_thread(&sched);
	Marked mk{};
	Fiber f(marked_entry, &mk);
	mk.self = &f.ctx;
	mk.back = &sched;
	uint64_t seen[6];

	weft__ctx_switch(&sched, &f.ctx); // fiber starts, marks, swaps back
	weft_test_marked_swap(&sched.sp, f.ctx.sp, seen, 0x3a1000);
	for (int i = 0; i < 6; i++) {
		EXPECT_EQ(seen[i], 0x3a1000u + i + 1) << "main, register " << i;
		EXPECT_EQ(mk.seen[i], 0xf1be2000u + i + 1)
			<< "fiber, register " << i;
	}
#endif
}
#endif

// ---- floating point state ----------------------------------------------------

struct RoundProbe {
	weft__ctx main, *self;
	int seen_at_start = -1;
	int seen_after_switches = -1;
	int rounds = 100;
	bool ok = true;
};

// volatile: evaluated at run time, under the current rounding mode.
__attribute__((noinline)) double third()
{
	volatile double one = 1.0, three = 3.0;
	return one / three;
}

void round_entry(void *arg)
{
	RoundProbe *p = static_cast<RoundProbe *>(arg);

	p->seen_at_start = fegetround();
	fesetround(FE_UPWARD);
	double up = third();
	for (int i = 0; i < p->rounds; i++) {
		weft__ctx_switch(p->self, &p->main);
		if (fegetround() != FE_UPWARD || third() != up)
			p->ok = false;
	}
	p->seen_after_switches = fegetround();
	weft__ctx_switch_final(p->self, &p->main);
}

TEST(Ctx, RoundingModeIsPerContext)
{
	RoundProbe p;
	weft__ctx_init_thread(&p.main);
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);
	double near = third();
	Fiber f(round_entry, &p);
	p.self = &f.ctx;

	for (int i = 0; i <= p.rounds; i++) {
		weft__ctx_switch(&p.main, &f.ctx);
		ASSERT_EQ(fegetround(), FE_TONEAREST) << "round " << i;
		ASSERT_EQ(third(), near);
#if defined(__x86_64__)
		ASSERT_EQ(_mm_getcsr() & 0x6000u, 0u); // MXCSR.RC = nearest
#endif
	}
	EXPECT_EQ(p.seen_at_start, FE_TONEAREST);
	EXPECT_TRUE(p.ok);
	EXPECT_EQ(p.seen_after_switches, FE_UPWARD);
	EXPECT_NE(third(), 0.0);
}

// The scheduler's switch into a task stores its FP words from the thread
// context instead of reading them (weft__ctx_switch_from_thread()): the
// fiber must still get its own mode back, and the thread its own.
TEST(Ctx, RoundingModeIsPerContextFromThread)
{
	RoundProbe p;
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);
	weft__ctx_init_thread(&p.main);
	double near = third();
	Fiber f(round_entry, &p);
	p.self = &f.ctx;

	for (int i = 0; i <= p.rounds; i++) {
		weft__ctx_switch_from_thread(&p.main, &f.ctx);
		ASSERT_EQ(fegetround(), FE_TONEAREST) << "round " << i;
		ASSERT_EQ(third(), near);
	}
	EXPECT_EQ(p.seen_at_start, FE_TONEAREST);
	EXPECT_TRUE(p.ok);
	EXPECT_EQ(p.seen_after_switches, FE_UPWARD);
}

TEST(Ctx, NewContextInheritsCreatorsRoundingMode)
{
	RoundProbe p;
	p.rounds = 0;
	weft__ctx_init_thread(&p.main);
	ASSERT_EQ(fesetround(FE_DOWNWARD), 0);
	Fiber f(round_entry, &p); // captures FE_DOWNWARD
	p.self = &f.ctx;
	ASSERT_EQ(fesetround(FE_TONEAREST), 0);

	weft__ctx_switch(&p.main, &f.ctx);
	EXPECT_EQ(p.seen_at_start, FE_DOWNWARD);
	EXPECT_EQ(fegetround(), FE_TONEAREST);
}

// ---- stack alignment and depth ----------------------------------------------

struct AlignProbe {
	weft__ctx main, *self;
	uintptr_t frame = 1;
	uintptr_t aligned_local = 1;
	uintptr_t aligned_alloca = 1;
	std::string printed;
};

// No over-aligned locals here: those make the compiler realign the stack
// and hand back an aligned frame address whatever the entry alignment.
__attribute__((noinline)) uintptr_t frame_address()
{
	return (uintptr_t)__builtin_frame_address(0);
}

__attribute__((noinline)) void align_body(AlignProbe *p)
{
	alignas(64) volatile char buf[64];
	double d = 1.0 / 3.0;
	char out[64];

	p->aligned_local = (uintptr_t)buf;
	buf[0] = 1;
	void *a = __builtin_alloca_with_align(48, 256);
	p->aligned_alloca = (uintptr_t)a;
	((volatile char *)a)[0] = 1;
#if defined(__x86_64__)
	// movaps-based code faults on a misaligned stack slot.
	volatile __m128 v = _mm_set1_ps(2.0f);
	__m128 sum = _mm_add_ps(v, v);
	float lanes[4];
	_mm_storeu_ps(lanes, sum);
	d += lanes[0];
#endif
	// glibc's printf spills vector registers to the stack.
	snprintf(out, sizeof(out), "%.3f", d);
	p->printed = out;
}

void align_entry(void *arg)
{
	AlignProbe *p = static_cast<AlignProbe *>(arg);

	p->frame = frame_address(); // before anything realigns the stack
	align_body(p);
	weft__ctx_switch_final(p->self, &p->main);
}

TEST(Ctx, StackIsAbiAlignedAtEntry)
{
	AlignProbe p;
	weft__ctx_init_thread(&p.main);
	Fiber f(align_entry, &p);
	p.self = &f.ctx;

	weft__ctx_switch(&p.main, &f.ctx);
	// x86-64: rsp % 16 == 8 at entry, so the pushed rbp is 16-aligned;
	// AArch64: sp is always 16-aligned and x29 points at the frame record.
	EXPECT_EQ(p.frame % 16, 0u);
	EXPECT_EQ(p.aligned_local % 64, 0u);
	EXPECT_EQ(p.aligned_alloca % 32, 0u);
#if defined(__x86_64__)
	EXPECT_EQ(p.printed, "4.333");
#else
	EXPECT_EQ(p.printed, "0.333");
#endif
}

struct DeepProbe {
	weft__ctx main, *self;
	int depth;
	uint64_t sum = 0;
};

__attribute__((noinline)) uint64_t recurse(int n, volatile char *prev)
{
	volatile char frame[128];

	frame[0] = (char)n;
	frame[127] = prev ? prev[0] : 0;
	if (n == 0)
		return 1;
	return recurse(n - 1, frame) + (uint64_t)(unsigned char)frame[0];
}

void deep_entry(void *arg)
{
	DeepProbe *p = static_cast<DeepProbe *>(arg);

	p->sum = recurse(p->depth, nullptr);
	weft__ctx_switch_final(p->self, &p->main);
}

TEST(Ctx, DeepRecursionFitsIn256KiBStack)
{
	DeepProbe p;
	p.depth = 1000; // ~200 KiB uninstrumented at ~200 bytes a frame
	weft__ctx_init_thread(&p.main);
	Fiber f(deep_entry, &p);
	p.self = &f.ctx;

	weft__ctx_switch(&p.main, &f.ctx);
	uint64_t want = 1;
	for (int n = 1; n <= p.depth; n++)
		want += (unsigned char)(char)n;
	EXPECT_EQ(p.sum, want);
}

// ---- threads -----------------------------------------------------------------

// A fiber made and first run on thread A, resumed on thread B: the saved
// state must not depend on the thread. The fiber switches back to the
// scheduler context of whichever thread runs it (published in `sched`).
struct Migrant {
	std::mutex mu;
	std::condition_variable cv;
	bool handed_off = false;
	weft__ctx *self = nullptr;
	weft__ctx *sched = nullptr; // the running thread's scheduler context
	pid_t tid_first = 0, tid_second = 0;
	uint64_t state = 0;
};

pid_t gettid_raw()
{
	return (pid_t)syscall(SYS_gettid);
}

void migrant_entry(void *arg)
{
	Migrant *m = static_cast<Migrant *>(arg);

	m->tid_first = gettid_raw();
	m->state = 42;
	weft__ctx_switch(m->self, m->sched);
	m->tid_second = gettid_raw();
	m->state = m->state * 2 + 1;
	weft__ctx_switch_final(m->self, m->sched);
}

TEST(Ctx, FiberResumesOnAnotherThread)
{
	Migrant m;
	TestStack stack;
	weft__ctx fib;

	std::thread a([&] {
		weft__ctx sched;
		weft__ctx_init_thread(&sched);
		weft__ctx_make(&fib, stack.lo(), stack.size(), migrant_entry,
			       &m);
		m.self = &fib;
		m.sched = &sched;
		weft__ctx_switch(&sched, &fib);
		std::lock_guard<std::mutex> lk(m.mu);
		m.handed_off = true;
		m.cv.notify_one();
	});
	std::thread b([&] {
		weft__ctx sched;
		weft__ctx_init_thread(&sched);
		{
			std::unique_lock<std::mutex> lk(m.mu);
			m.cv.wait(lk, [&] {
				return m.handed_off;
			});
		}
		m.sched = &sched;
		weft__ctx_switch(&sched, &fib);
		weft__ctx_destroy(&fib);
	});
	a.join();
	b.join();

	EXPECT_EQ(m.state, 85u);
	EXPECT_NE(m.tid_first, 0);
	EXPECT_NE(m.tid_second, 0);
	EXPECT_NE(m.tid_first, m.tid_second);
}

// ---- tools --------------------------------------------------------------------

// Everything a sanitizer could misread across switches, in one child
// process that must exit 0 with no report: stack objects of a suspended
// fiber read by another, heap traffic, a stack reused by a new fiber after
// its first owner ended with poisoned frames, and plain (non-atomic) data
// handed between threads only through switches and a mutex. Runs in every
// build (RELIABILITY 3.7); meaningful under ASan, TSan and valgrind.
struct ToolRun {
	weft__ctx main, *self;
	volatile char *peer_buf = nullptr;
	long plain = 0;
	int depth = 0;
};

__attribute__((noinline)) long fill_frames(int n)
{
	volatile char buf[300];
	for (int i = 0; i < 300; i++)
		buf[i] = (char)i;
	return n ? fill_frames(n - 1) + buf[7] : buf[9];
}

void tool_entry(void *arg)
{
	ToolRun *t = static_cast<ToolRun *>(arg);
	volatile char local[64];

	memset((void *)local, 'x', sizeof(local));
	t->peer_buf = local;
	char *heap = new char[100];
	heap[99] = 1;
	t->plain += fill_frames(t->depth);
	weft__ctx_switch(t->self, &t->main);
	t->plain += local[3] + heap[99];
	delete[] heap;
	weft__ctx_switch_final(t->self, &t->main);
}

void tool_scenario()
{
	TestStack stack;
	ToolRun t;
	weft__ctx_init_thread(&t.main);

	for (int round = 0; round < 3; round++) {
		weft__ctx fib;
		t.depth = 20 - round * 7; // deep first, then shallower
		weft__ctx_make(&fib, stack.lo(), stack.size(), tool_entry, &t);
		t.self = &fib;
		weft__ctx_switch(&t.main, &fib);
		// The fiber is suspended; its stack object is still alive.
		if (t.peer_buf[5] != 'x')
			_exit(3);
		weft__ctx_switch(&t.main, &fib);
		weft__ctx_destroy(&fib);
	}

	// Hand a suspended fiber and plain (non-atomic) data from thread a to
	// thread b through a mutex, both threads alive.
	weft__ctx fib;
	weft__ctx_make(&fib, stack.lo(), stack.size(), tool_entry, &t);
	std::mutex mu;
	std::condition_variable cv;
	bool handed = false;
	t.self = &fib;
	std::thread a([&] {
		std::lock_guard<std::mutex> lk(mu);
		weft__ctx_init_thread(&t.main);
		weft__ctx_switch(&t.main, &fib);
		handed = true;
		cv.notify_one();
	});
	std::thread b([&] {
		std::unique_lock<std::mutex> lk(mu);
		cv.wait(lk, [&] {
			return handed;
		});
		weft__ctx_init_thread(&t.main);
		t.plain++;
		weft__ctx_switch(&t.main, &fib);
		weft__ctx_destroy(&fib);
	});
	a.join();
	b.join();
	if (t.plain == 0)
		_exit(4);
	// exit(), not _exit(): TSan sets exit code 66 and LSan runs here.
	std::exit(0);
}

TEST(Ctx, ToolHooksReportNothing)
{
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	// ASan and UBSan (-fno-sanitize-recover) abort on a report, TSan
	// exits with 66, LSan with 23, valgrind with --error-exitcode.
	EXPECT_EXIT(tool_scenario(), testing::ExitedWithCode(0), "");
}

} // namespace
