// SPDX-License-Identifier: MIT
//
// tests/stack_test.cc - fiber stacks (runtime/stack.c): shapes and sizes,
// guard pages, lazy commit (mincore), cache and pool recycling, the pool's
// page trimming, and the stack-overflow reporter (death tests).
//
// Death tests use the "threadsafe" style: the child re-executes this
// binary and runs only that test, so signal dispositions installed there
// never leak into other tests.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <ctime>
#include <vector>

#include <pthread.h>
#include <signal.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

extern "C" {
#include "runtime/ctx.h"
#include "runtime/stack.h"
#include "runtime/test_hooks.h"
#include "tests/support/stack_hooks.h"
#include "weft.h"
}

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() (RUNNING_ON_VALGRIND != 0)
#else
#define UNDER_VALGRIND() false
#endif

namespace
{

size_t page()
{
	return (size_t)sysconf(_SC_PAGESIZE);
}

// WEFT_TEST_SCALE shrinks the big runs (sanitizer builds), never to 0.
size_t scaled(size_t n)
{
	const char *env = getenv("WEFT_TEST_SCALE");
	long div = env ? atol(env) : 1;
	if (div < 1)
		div = 1;
	size_t r = n / (size_t)div;
	return r ? r : 1;
}

// Resident pages of [addr, addr + len) (both page-aligned); -1 on error.
long resident_pages(const void *addr, size_t len)
{
	size_t n = len / page();
	std::vector<unsigned char> vec(n ? n : 1);
	if (mincore(const_cast<void *>(addr), len, vec.data()) != 0)
		return -1;
	long count = 0;
	for (size_t i = 0; i < n; i++)
		count += vec[i] & 1;
	return count;
}

// The page holding the header: the only one a fresh stack touches.
uintptr_t header_page(const weft__stack *s)
{
	return (uintptr_t)s & ~(uintptr_t)(page() - 1);
}

struct Pool {
	weft__stack_pool p;
	weft__stack_cache c{};
	explicit Pool(size_t default_size = 0)
	{
		if (weft__stack_pool_init(&p, default_size) != 0)
			abort();
	}
	~Pool()
	{
		weft__stack_cache_flush(&p, &c);
		weft__stack_pool_destroy(&p);
	}
	weft__stack *get(size_t size = 0)
	{
		return weft__stack_get(&p, &c, size);
	}
	void put(weft__stack *s)
	{
		weft__stack_put(&p, &c, s);
	}
};

// ---- shapes --------------------------------------------------------------------

TEST(Stack, DefaultStackShape)
{
	Pool pool;
	weft__stack *s = pool.get();
	ASSERT_NE(s, nullptr);

	EXPECT_EQ(s->flags & ~WEFT__STACK_GUARDED, WEFT__STACK_CHUNK);
	EXPECT_GE(s->size, WEFT__STACK_DEFAULT_SIZE * WEFT__STACK_SCALE);
	EXPECT_EQ(s->size, pool.p.default_size);
	EXPECT_EQ((uintptr_t)s->lo % page(), 0u);
	EXPECT_EQ(s->size % 16, 0u);
	EXPECT_EQ((char *)s->lo + s->size, (char *)s); // header right above
	EXPECT_EQ((uintptr_t)s % alignof(max_align_t), 0u);
	EXPECT_LE((char *)(s + 1), (char *)s->map_base + s->map_size);
	EXPECT_GE((char *)s->lo - weft__stack_guard_size(),
		  (char *)s->map_base);
	// Both ends are usable.
	((volatile char *)s->lo)[0] = 1;
	((volatile char *)s->lo)[s->size - 1] = 1;
	pool.put(s);
}

TEST(Stack, SmallRequestGetsDefaultStack)
{
	Pool pool;
	weft__stack *s = pool.get(4096);
	ASSERT_NE(s, nullptr);
	EXPECT_EQ(s->flags & ~WEFT__STACK_GUARDED, WEFT__STACK_CHUNK);
	EXPECT_EQ(s->size, pool.p.default_size);
	pool.put(s);
}

TEST(Stack, LargerSizeGetsOwnMappingUnmappedOnPut)
{
	Pool pool;
	const size_t want = (1u << 20) + 123;
	weft__stack *s = pool.get(want);
	ASSERT_NE(s, nullptr);

	EXPECT_EQ(s->flags, WEFT__STACK_SINGLE);
	EXPECT_GE(s->size, want * WEFT__STACK_SCALE);
	EXPECT_EQ((uintptr_t)s->lo % page(), 0u);
	EXPECT_EQ((char *)s->lo + s->size, (char *)s);
	EXPECT_EQ((char *)s->map_base,
		  (char *)s->lo - weft__stack_guard_size());
	EXPECT_EQ(pool.p.nr_single, 1u);
	((volatile char *)s->lo)[0] = 1;
	((volatile char *)s->lo)[s->size - 1] = 1;

	void *base = s->map_base;
	pool.put(s);
	EXPECT_EQ(pool.p.nr_single, 0u);
	unsigned char v;
	errno = 0;
	EXPECT_EQ(mincore(base, page(), &v), -1) << "still mapped";
	EXPECT_EQ(errno, ENOMEM);
}

// ---- guards ---------------------------------------------------------------------

TEST(Stack, InGuardMatchesTheGuardPageOnly)
{
	Pool pool;
	weft__stack *s = pool.get();
	ASSERT_NE(s, nullptr);
	const char *lo = (const char *)s->lo;
	const size_t g = weft__stack_guard_size();

	EXPECT_EQ(g, page());
	EXPECT_TRUE(weft__stack_in_guard(s, lo - 1));
	EXPECT_TRUE(weft__stack_in_guard(s, lo - g));
	EXPECT_FALSE(weft__stack_in_guard(s, lo - g - 1));
	EXPECT_FALSE(weft__stack_in_guard(s, lo));
	EXPECT_FALSE(weft__stack_in_guard(s, lo + s->size - 1));
	EXPECT_FALSE(weft__stack_in_guard(s, nullptr));
	pool.put(s);
}

void touch_below(weft__stack *s, size_t offset)
{
	((volatile char *)s->lo)[-(ptrdiff_t)offset] = 1;
}

TEST(StackDeathTest, GuardPageIsInaccessible)
{
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	Pool pool;
	weft__stack *s = pool.get();
	weft__stack *t = pool.get(); // next slot of the same chunk
	ASSERT_NE(s, nullptr);
	ASSERT_NE(t, nullptr);

	// ASan and TSan turn SIGSEGV into their own report and a nonzero
	// exit; other builds die of the signal itself (no overflow handler
	// is installed in this test).
#if defined(WEFT__ASAN) || defined(WEFT__TSAN)
	EXPECT_DEATH(touch_below(s, 1), "");
	EXPECT_DEATH(touch_below(t, weft__stack_guard_size()), "");
#else
	EXPECT_EXIT(touch_below(s, 1), testing::KilledBySignal(SIGSEGV), "");
	EXPECT_EXIT(touch_below(t, weft__stack_guard_size()),
		    testing::KilledBySignal(SIGSEGV), "");
	EXPECT_EXIT(touch_below(pool.get(3u << 20), 1),
		    testing::KilledBySignal(SIGSEGV), "");
#endif
	pool.put(t);
	pool.put(s);
}

// ---- lazy commit ------------------------------------------------------------------

// A new chunk has the header page of every slot faulted in at once (one
// process_madvise, or a madvise per slot), not at each stack's first touch;
// the rest of each slot stays uncommitted. Skipped where the kernel lacks
// MADV_POPULATE_WRITE (Linux < 5.14): the pages are then faulted on use.
TEST(Stack, NewChunkPrefaultsEveryHeaderPageOnly)
{
	void *probe = mmap(nullptr, page(), PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(probe, MAP_FAILED);
	bool populate = madvise(probe, page(), MADV_POPULATE_WRITE) == 0;
	munmap(probe, page());
	if (!populate)
		GTEST_SKIP() << "no MADV_POPULATE_WRITE on this kernel";

	Pool pool;
	weft__stack *s = pool.get(); // maps the chunk: slot 0
	ASSERT_NE(s, nullptr);
	char *base = (char *)s->map_base;
	size_t slot = pool.p.slot_size;
	for (unsigned i = 0; i < pool.p.chunk_slots; i++) {
		char *top = base + (size_t)(i + 1) * slot - page();
		EXPECT_EQ(resident_pages(top, page()), 1) << "slot " << i;
		EXPECT_EQ(resident_pages(base + (size_t)i * slot,
					 slot - page()),
			  0)
			<< "slot " << i;
	}
	pool.put(s);
}

TEST(Stack, FreshStackCommitsOnlyItsHeaderPage)
{
	Pool pool;
	std::vector<weft__stack *> got;
	for (int i = 0; i < 3; i++) { // slot 0 (maps the chunk), 1 and 2
		weft__stack *s = pool.get();
		ASSERT_NE(s, nullptr);
		got.push_back(s);
		uintptr_t hp = header_page(s);
		size_t below = hp - (uintptr_t)s->lo;
		EXPECT_EQ(resident_pages(s->lo, below), 0) << "stack " << i;
		EXPECT_EQ(resident_pages((void *)hp, page()), 1);
		EXPECT_EQ(
			resident_pages((char *)s->lo - weft__stack_guard_size(),
				       weft__stack_guard_size()),
			0);
	}
	weft__stack *big = pool.get(2u << 20);
	ASSERT_NE(big, nullptr);
	EXPECT_EQ(resident_pages(big->lo,
				 header_page(big) - (uintptr_t)big->lo),
		  0);
	pool.put(big);
	for (weft__stack *s : got)
		pool.put(s);
}

// ---- recycling ---------------------------------------------------------------------

TEST(Stack, CacheRecyclesTheSameStacks)
{
	Pool pool;
	std::set<weft__stack *> first, second;
	for (int i = 0; i < 10; i++)
		first.insert(pool.get());
	ASSERT_EQ(first.size(), 10u);
	ASSERT_EQ(first.count(nullptr), 0u);
	unsigned long carved = pool.p.nr_carved, chunks = pool.p.nr_chunks;
	// The rest of the fresh chunk waits in the cache.
	const unsigned spare = pool.c.count;
	EXPECT_EQ(spare, pool.p.chunk_slots - 10);
	for (weft__stack *s : first)
		pool.put(s);
	EXPECT_EQ(pool.c.count, spare + 10);
	EXPECT_EQ(pool.p.nr_free, 0u); // nothing reached the pool
	for (int i = 0; i < 10; i++)
		second.insert(pool.get());
	EXPECT_EQ(first, second); // the most recently used come back first
	EXPECT_EQ(pool.p.nr_carved, carved);
	EXPECT_EQ(pool.p.nr_chunks, chunks);
	EXPECT_EQ(pool.c.count, spare);
	for (weft__stack *s : second)
		pool.put(s);
}

TEST(StackPool, CacheOverflowGoesToPoolAndComesBackInBatches)
{
	Pool pool;
	std::vector<weft__stack *> v, spare;
	const unsigned n = WEFT__STACK_CACHE_MAX + 1;
	for (unsigned i = 0; i < n; i++)
		v.push_back(pool.get());
	// Hold on to the rest of the last fresh chunk: the cache starts empty.
	while (pool.c.count)
		spare.push_back(pool.get());
	for (weft__stack *s : v)
		pool.put(s);
	EXPECT_EQ(pool.c.count, WEFT__STACK_BATCH);
	EXPECT_EQ(pool.p.nr_free, n - WEFT__STACK_BATCH);

	// Drain the cache; the next get takes a batch from the pool.
	std::vector<weft__stack *> w;
	for (unsigned i = 0; i < WEFT__STACK_BATCH; i++)
		w.push_back(pool.get());
	EXPECT_EQ(pool.c.count, 0u);
	w.push_back(pool.get());
	EXPECT_EQ(pool.c.count, WEFT__STACK_BATCH - 1);
	EXPECT_EQ(pool.p.nr_free, n - 2 * WEFT__STACK_BATCH);
	EXPECT_EQ(pool.p.nr_carved, n + spare.size()); // no new chunk
	for (weft__stack *s : w)
		pool.put(s);
	for (weft__stack *s : spare)
		pool.put(s);
}

// A worker that finds its cache and the pool empty maps a chunk and keeps
// all of it: one stack now, the rest in its cache, so the next
// chunk_slots - 1 fresh stacks take neither the lock nor a syscall.
TEST(StackPool, NewChunkGoesWholeToTheCallersCache)
{
	Pool pool;
	const unsigned slots = pool.p.chunk_slots;
	weft__stack *first = pool.get();
	ASSERT_NE(first, nullptr);
	EXPECT_EQ(pool.p.nr_chunks, 1u);
	EXPECT_EQ(pool.p.nr_carved, slots);
	EXPECT_EQ(pool.p.nr_free, 0u);
	EXPECT_EQ(pool.c.count, slots - 1);
	std::set<weft__stack *> seen{ first };
	for (weft__stack *s = pool.c.head; s; s = s->next) {
		EXPECT_EQ(s->map_base, first->map_base);
		seen.insert(s);
	}
	EXPECT_EQ(seen.size(), (size_t)slots);

	std::vector<weft__stack *> v{ first };
	for (unsigned i = 1; i < slots; i++)
		v.push_back(pool.get());
	EXPECT_EQ(pool.p.nr_chunks, 1u);
	EXPECT_EQ(pool.c.count, 0u);
	v.push_back(pool.get()); // the next chunk
	EXPECT_EQ(pool.p.nr_chunks, 2u);
	EXPECT_EQ(pool.c.count, slots - 1);
	EXPECT_NE(v.back()->map_base, first->map_base);
	for (weft__stack *s : v)
		pool.put(s);
}

#ifdef WEFT_TEST_HOOKS // weft_test_stack_chunk_hook()
// Setting up a chunk (mmap, faulting in its header pages, installing its
// guards: ~250 us under this project's hypervisor) holds no lock: while
// one thread is stalled inside it, another gives stacks to the pool and
// takes them back. With the lock held there, the other thread would wait,
// and the stalled one gives up on it after 5 s: the test fails, not hangs.
std::atomic<int> chunk_hook_state; // 1: a set-up is stalled; 2: released
std::atomic<bool> other_done;

void stall_in_chunk_setup()
{
	int want = 0;
	if (!chunk_hook_state.compare_exchange_strong(want, 1))
		return; // only the first set-up stalls
	auto until = std::chrono::steady_clock::now() + std::chrono::seconds(5);
	while (!other_done.load() && std::chrono::steady_clock::now() < until)
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	chunk_hook_state = 2;
}

TEST(StackPool, ChunkSetUpHoldsNoLock)
{
	Pool pool;
	weft__stack_cache other{};
	// The other thread's stacks: a chunk of its own, most of it cached.
	weft__stack *mine = weft__stack_get(&pool.p, &other, 0);
	ASSERT_NE(mine, nullptr);
	ASSERT_GT(other.count, 0u);

	chunk_hook_state = 0;
	other_done = false;
	weft_test_stack_chunk_hook(stall_in_chunk_setup);
	weft__stack *got = nullptr;
	// Its cache and the pool are empty: it maps a chunk, and stalls.
	std::thread stalled([&] {
		got = pool.get();
	});
	while (chunk_hook_state.load() == 0)
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	// Both of these take the pool's lock.
	weft__stack_cache_flush(&pool.p, &other);
	weft__stack *back = weft__stack_get(&pool.p, &other, 0);
	other_done = true;
	bool stalled_still = chunk_hook_state.load() == 1;
	stalled.join();
	weft_test_stack_chunk_hook(nullptr);

	EXPECT_TRUE(stalled_still)
		<< "the pool was unusable while a chunk was set up";
	ASSERT_NE(back, nullptr);
	ASSERT_NE(got, nullptr);
	EXPECT_NE(got->map_base, mine->map_base); // it did map a new chunk
	weft__stack_put(&pool.p, &other, back);
	weft__stack_put(&pool.p, &other, mine);
	weft__stack_cache_flush(&pool.p, &other);
	pool.put(got);
}
#endif

// Does this kernel have MADV_GUARD_INSTALL (6.13+)?
bool kernel_has_guard_install()
{
	void *m = mmap(nullptr, 2 * page(), PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return false;
	bool ok = madvise(m, page(), 102 /* MADV_GUARD_INSTALL */) == 0;
	munmap(m, 2 * page());
	return ok;
}

TEST(StackPool, HundredThousandStacksAliveAtOnce)
{
	Pool pool;
	const size_t n = scaled(100000);
	std::vector<weft__stack *> v;
	int err = 0;
	v.reserve(n);
	for (size_t i = 0; i < n; i++) {
		weft__stack *s = pool.get();
		if (!s) {
			err = errno;
			break;
		}
		v.push_back(s);
	}
	const size_t got = v.size();
	if (kernel_has_guard_install()) {
		EXPECT_EQ(got, n) << strerror(err);
		EXPECT_EQ(pool.p.nr_chunks,
			  (n + pool.p.chunk_slots - 1) / pool.p.chunk_slots);
	} else {
		// mprotect guards: two VMAs a stack, so vm.max_map_count
		// (65530 by default) stops us near 32k, cleanly.
		EXPECT_TRUE(got == n || err == ENOMEM) << strerror(err);
	}
	// Every slot set up is handed out or waits in the cache.
	EXPECT_EQ(pool.p.nr_carved, got + pool.c.count);

	// Disjoint: each guard starts at or above the previous header's end.
	std::vector<weft__stack *> by_lo = v;
	std::sort(by_lo.begin(), by_lo.end(),
		  [](weft__stack *a, weft__stack *b) {
			  return a->lo < b->lo;
		  });
	for (size_t i = 1; i < got; i++)
		ASSERT_LE((char *)(by_lo[i - 1] + 1),
			  (char *)by_lo[i]->lo - weft__stack_guard_size());

	for (weft__stack *s : v)
		pool.put(s);
	EXPECT_EQ(pool.p.nr_free + pool.c.count, pool.p.nr_carved);
}

// Can this process install guards with one process_madvise() on a pidfd of
// its own (Linux 6.13+; valgrind 3.19 and some seccomp filters refuse
// pidfd_open)? Then stack.c's guard_batch() does.
bool kernel_batches_guards()
{
	if (!kernel_has_guard_install())
		return false;
	int pidfd = (int)syscall(SYS_pidfd_open, getpid(), 0);
	if (pidfd < 0)
		return false;
	char *m = (char *)mmap(nullptr, 4 * page(), PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	bool ok = false;
	if (m != MAP_FAILED) {
		struct iovec iov[2] = { { m, page() }, { m + 2 * page(), page() } };
		ok = syscall(SYS_process_madvise, pidfd, iov, 2,
			     102 /* MADV_GUARD_INSTALL */, 0u) ==
		     (long)(2 * page());
		munmap(m, 4 * page());
	}
	close(pidfd);
	return ok;
}

// Can the kernel read the byte at @addr? A guard page makes write() from
// it fail with EFAULT instead of killing the test.
bool kernel_can_read(const void *addr)
{
	int fds[2];
	if (pipe(fds) != 0)
		abort();
	ssize_t n = write(fds[1], addr, 1);
	int err = errno;
	close(fds[0]);
	close(fds[1]);
	EXPECT_TRUE(n == 1 || err == EFAULT) << strerror(err);
	return n == 1;
}

// Every slot of every chunk has its guard, whether it was installed as the
// slot was carved or for the whole chunk at once (stack.c guard_batch(),
// once MADV_GUARD_INSTALL is known to work): the page right below each
// stack's lowest byte faults, the lowest byte itself does not. Three
// chunks, so that later chunks take the batched path.
TEST(Stack, EverySlotOfEveryChunkHasItsGuard)
{
	Pool pool;
	const size_t n = 3 * (size_t)pool.p.chunk_slots;
	std::vector<weft__stack *> v;
	for (size_t i = 0; i < n; i++) {
		weft__stack *s = pool.get();
		ASSERT_NE(s, nullptr) << i;
		v.push_back(s);
	}
	EXPECT_EQ(pool.p.nr_chunks, 3u);
	for (size_t i = 0; i < n; i++) {
		const char *lo = (const char *)v[i]->lo;
		EXPECT_FALSE(kernel_can_read(lo - 1)) << "stack " << i;
		EXPECT_FALSE(kernel_can_read(lo - weft__stack_guard_size()))
			<< "stack " << i;
		EXPECT_TRUE(kernel_can_read(lo)) << "stack " << i;
	}
	if (kernel_batches_guards()) {
		// The newest chunks were guarded in one call (the first one
		// probes MADV_GUARD_INSTALL slot by slot in a fresh process).
		unsigned batched = 0;
		for (weft__stack *c = pool.p.chunks; c; c = c->chunk_next)
			batched += (c->flags & WEFT__STACK_GUARDED) != 0;
		EXPECT_GE(batched, 2u);
	}
	for (weft__stack *s : v)
		pool.put(s);
}

#ifdef WEFT_TEST_HOOKS // weft_test_fault()
// Is any mapping of this process at @addr (/proc/self/maps)? No syscall
// on the address itself, which valgrind reports when it is unmapped.
bool mapped_at(const void *addr)
{
	uintptr_t a = (uintptr_t)addr;
	FILE *f = fopen("/proc/self/maps", "r");
	if (!f)
		abort();
	char line[512];
	bool found = false;
	while (!found && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		if (sscanf(line, "%lx-%lx", &lo, &hi) == 2)
			found = lo <= a && a < hi;
	}
	fclose(f);
	return found;
}

// A guard that cannot be installed part-way through a new chunk (mprotect
// at vm.max_map_count, or any other refusal) keeps the slots already set
// up, unmaps the rest of the mapping (no address space reserved for stacks
// that will never be), and the pool's counts stay exact. The third slot's
// guard fails, whichever way this kernel makes guards.
TEST(StackPool, GuardFailureMidChunkKeepsTheSlotsSetUp)
{
	weft__stack_guard_probe();
	Pool pool;
	if (kernel_batches_guards()) // call 1 is the batch, then one a slot
		ASSERT_EQ(0, weft_test_fault("madvise_guard", ENOMEM, 1, 3));
	else if (kernel_has_guard_install())
		ASSERT_EQ(0, weft_test_fault("madvise_guard", ENOMEM, 3, 0));
	else
		ASSERT_EQ(0, weft_test_fault("mprotect", ENOMEM, 3, 0));
	weft__stack *s = pool.get();
	weft_test_faults_clear();
	ASSERT_NE(s, nullptr);
	EXPECT_EQ(pool.p.nr_chunks, 1u);
	EXPECT_EQ(pool.p.nr_carved, 2u);
	ASSERT_EQ(pool.c.count, 1u);
	weft__stack *t = pool.c.head;
	EXPECT_EQ(t->map_base, s->map_base);
	char *base = (char *)s->map_base;
	EXPECT_EQ(pool.p.chunks->map_size, 2 * pool.p.slot_size);
	// The third slot's range is gone; the two kept slots still work.
	EXPECT_TRUE(mapped_at(base + 2 * pool.p.slot_size - page()));
	EXPECT_FALSE(mapped_at(base + 2 * pool.p.slot_size));
	EXPECT_FALSE(mapped_at(base + 3 * pool.p.slot_size - page()));
	for (weft__stack *x : { s, t }) {
		EXPECT_FALSE(kernel_can_read((char *)x->lo - 1));
		((volatile char *)x->lo)[0] = 1;
	}
	// The next fresh stacks come from a new, whole chunk.
	weft__stack *u = pool.get(), *w = pool.get();
	ASSERT_NE(w, nullptr);
	EXPECT_EQ(u, t);
	EXPECT_NE(w->map_base, s->map_base);
	EXPECT_EQ(pool.p.nr_chunks, 2u);
	EXPECT_EQ(pool.p.nr_carved, 2u + pool.p.chunk_slots);
	pool.put(s);
	pool.put(u);
	pool.put(w);
}
#endif

// Touch n fresh stacks as a deep call would (lowest and a middle page) and
// give them all back. Returns them in put order.
static std::vector<weft__stack *> burst(Pool &pool, unsigned n)
{
	std::vector<weft__stack *> v;
	for (unsigned i = 0; i < n; i++) {
		weft__stack *s = pool.get();
		EXPECT_NE(s, nullptr);
		if (!s)
			break;
		((volatile char *)s->lo)[0] = 1;
		((volatile char *)s->lo)[s->size / 2] = 1;
		v.push_back(s);
	}
	for (weft__stack *s : v)
		pool.put(s);
	return v;
}

// How many of v had their pages (below the header page) dropped; each
// stack is either whole (2 touched pages) or dropped.
static unsigned released_of(const std::vector<weft__stack *> &v)
{
	unsigned count = 0;
	for (weft__stack *s : v) {
		long r = resident_pages(s->lo, header_page(s) - (uintptr_t)s->lo);
		EXPECT_TRUE(r == 0 || r == 2) << r;
		count += r == 0;
	}
	return count;
}

TEST(StackPool, WithoutDecayReleasesPagesBeyondTheWarmLimit)
{
	Pool pool;
	pool.p.decay_ns = 0; // due as soon as they come back
	const unsigned n = WEFT__STACK_CACHE_MAX + WEFT__STACK_POOL_WARM + 80;
	std::vector<weft__stack *> v = burst(pool, n);

	unsigned in_pool = pool.p.nr_free;
	EXPECT_EQ(in_pool + pool.c.count, n);
	EXPECT_GE(in_pool, WEFT__STACK_POOL_WARM);
	// The pool kept the pages of 256 and dropped the rest; cached stacks
	// keep theirs.
	EXPECT_EQ(pool.p.nr_released, in_pool - WEFT__STACK_POOL_WARM);
	EXPECT_EQ(released_of(v), in_pool - WEFT__STACK_POOL_WARM);
	EXPECT_EQ(weft__stack_pool_trim_due(&pool.p), UINT64_MAX);
	// Header pages stay (they hold the free-list links).
	for (weft__stack *s : v)
		ASSERT_EQ(resident_pages((void *)header_page(s), page()), 1);

	// Flushing the cache into a pool that is over its warm limit
	// releases those too.
	weft__stack_cache_flush(&pool.p, &pool.c);
	EXPECT_EQ(released_of(v), n - WEFT__STACK_POOL_WARM);

	// Warm stacks come back first.
	weft__stack *s = pool.get();
	EXPECT_EQ(resident_pages(s->lo, page()), 1);
	pool.put(s);
}

// The default: stacks that come back keep their pages until they have
// waited decay_ns in the pool, so a burst that follows a burst reuses them
// without a fault; then the oldest beyond the warm 256 are released.
TEST(StackPool, FreeStacksKeepTheirPagesUntilTheyDecay)
{
	Pool pool;
	EXPECT_EQ(pool.p.decay_ns, WEFT__STACK_DECAY_NS);
	const unsigned n = WEFT__STACK_CACHE_MAX + WEFT__STACK_POOL_WARM + 80;
	std::vector<weft__stack *> v = burst(pool, n);
	weft__stack_cache_flush(&pool.p, &pool.c);

	EXPECT_EQ(pool.p.nr_free, n);
	EXPECT_EQ(pool.p.nr_released, 0u);
	EXPECT_EQ(released_of(v), 0u);
	uint64_t due = weft__stack_pool_trim_due(&pool.p);
	ASSERT_NE(due, UINT64_MAX);

	// Not due yet: a trim before the deadline releases nothing.
	EXPECT_EQ(weft__stack_pool_trim(&pool.p, due - 1), due);
	EXPECT_EQ(pool.p.nr_released, 0u);

	// A second burst of the same size reuses every one of them: nothing
	// new is carved.
	unsigned long carved = pool.p.nr_carved;
	std::vector<weft__stack *> again = burst(pool, n);
	EXPECT_EQ(pool.p.nr_carved, carved);
	weft__stack_cache_flush(&pool.p, &pool.c);

	// Once due, the trim releases all but the warm 256, and nothing is
	// due any more. The cache overflowed into the pool in batches, each
	// stamped with the coarse clock of its moment; a slow build (ASan)
	// spans several ticks, so the trim time is one decay after the newest
	// stamp, not after the oldest (trim_due).
	due = weft__stack_pool_trim_due(&pool.p);
	ASSERT_NE(due, UINT64_MAX);
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	uint64_t newest = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	EXPECT_EQ(weft__stack_pool_trim(&pool.p, newest + pool.p.decay_ns),
		  UINT64_MAX);
	EXPECT_EQ(pool.p.nr_released, n - WEFT__STACK_POOL_WARM);
	EXPECT_EQ(released_of(v), n - WEFT__STACK_POOL_WARM);
	EXPECT_EQ(pool.p.nr_free, n);
}

// Stacks released together are the ones that waited longest: a stack given
// back later is still warm when an older one is trimmed.
TEST(StackPool, TrimReleasesTheOldestFirst)
{
	Pool pool;
	const unsigned n = WEFT__STACK_POOL_WARM + 64;
	std::vector<weft__stack *> old_ones;
	for (unsigned i = 0; i < n; i++) {
		weft__stack *s = pool.get();
		ASSERT_NE(s, nullptr);
		((volatile char *)s->lo)[0] = 1;
		((volatile char *)s->lo)[s->size / 2] = 1;
		old_ones.push_back(s);
	}
	// Give them back in two generations: the first n - 16 now...
	for (unsigned i = 0; i < n - 16; i++)
		pool.put(old_ones[i]);
	weft__stack_cache_flush(&pool.p, &pool.c);
	// ...stamped with a clock far in the past, as if they had waited.
	for (weft__stack *s = pool.p.warm_head; s; s = s->next)
		s->freed_ns = 0;
	pool.p.trim_due_ns = pool.p.decay_ns;
	// The last 16 now, with today's clock.
	for (unsigned i = n - 16; i < n; i++)
		pool.put(old_ones[i]);
	weft__stack_cache_flush(&pool.p, &pool.c);

	// The flush trimmed what was due (an explicit trim finds nothing
	// more): exactly the surplus beyond 256, all of it from the old
	// generation; the new one is not due for decay_ns.
	weft__stack_pool_trim(&pool.p, pool.p.decay_ns);
	EXPECT_EQ(pool.p.nr_released, n - WEFT__STACK_POOL_WARM);
	std::vector<weft__stack *> newest(old_ones.end() - 16, old_ones.end());
	EXPECT_EQ(released_of(newest), 0u);
	std::vector<weft__stack *> first(old_ones.begin(), old_ones.end() - 16);
	EXPECT_EQ(released_of(first), n - WEFT__STACK_POOL_WARM);
	// 256 warm left: nothing can be due any more.
	EXPECT_EQ(pool.p.nr_warm, WEFT__STACK_POOL_WARM);
	EXPECT_EQ(weft__stack_pool_trim_due(&pool.p), UINT64_MAX);
}

TEST(StackPool, InitRejectsAbsurdSizes)
{
	weft__stack_pool p;
	EXPECT_EQ(weft__stack_pool_init(&p, SIZE_MAX), -EINVAL);
	EXPECT_EQ(weft__stack_pool_init(&p, SIZE_MAX - 4095), -EINVAL);
	EXPECT_EQ(weft__stack_pool_init(&p, SIZE_MAX / 2), -EINVAL);
	if (WEFT__STACK_SCALE > 1) { // would overflow only when scaled
		EXPECT_EQ(weft__stack_pool_init(
				  &p, SIZE_MAX / WEFT__STACK_SCALE + 1),
			  -EINVAL);
	}
	EXPECT_EQ(weft__stack_pool_init(&p, WEFT__STACK_MAX_SIZE + 1), -EINVAL);

	// Tiny sizes are raised to the minimum.
	ASSERT_EQ(weft__stack_pool_init(&p, 1), 0);
	EXPECT_GE(p.default_size, WEFT__STACK_MIN_SIZE * WEFT__STACK_SCALE);
	EXPECT_LT(p.default_size,
		  WEFT__STACK_MIN_SIZE * WEFT__STACK_SCALE + page());
	EXPECT_EQ(p.slot_size % page(), 0u);
	weft__stack_cache c{};
	weft__stack *s = weft__stack_get(&p, &c, 0);
	ASSERT_NE(s, nullptr);
	EXPECT_EQ(s->size, p.default_size);

	// Absurd per-stack sizes fail cleanly, without mapping anything.
	errno = 0;
	EXPECT_EQ(weft__stack_get(&p, &c, SIZE_MAX), nullptr);
	EXPECT_EQ(errno, EINVAL);
	errno = 0;
	EXPECT_EQ(weft__stack_get(&p, &c, SIZE_MAX - page() + 2), nullptr);
	EXPECT_EQ(errno, EINVAL);
	errno = 0;
	EXPECT_EQ(weft__stack_get(&p, &c, (size_t)64 << 30), nullptr);
	EXPECT_EQ(errno, EINVAL);
	EXPECT_EQ(p.nr_single, 0u);

	weft__stack_put(&p, &c, s);
	weft__stack_cache_flush(&p, &c);
	weft__stack_pool_destroy(&p);

	// 0 means the default; sizes are rounded so slots are whole pages.
	ASSERT_EQ(weft__stack_pool_init(&p, 0), 0);
	EXPECT_GE(p.default_size, WEFT__STACK_DEFAULT_SIZE * WEFT__STACK_SCALE);
	weft__stack_pool_destroy(&p);
	ASSERT_EQ(weft__stack_pool_init(&p, 100001), 0);
	EXPECT_GE(p.default_size, 100001u * WEFT__STACK_SCALE);
	EXPECT_EQ(p.slot_size % page(), 0u);
	weft__stack_pool_destroy(&p);
}

// Several workers, each with its own cache, share one pool. Every stack
// is owned by one thread at a time: the owner writes its id at both ends
// and checks them before giving the stack back.
TEST(StackPool, WorkersShareThePool)
{
	Pool pool;
	const int nthreads = 4, rounds = (int)scaled(3000);
	std::atomic<long> bad{ 0 };
	std::vector<std::thread> ts;

	for (int id = 0; id < nthreads; id++) {
		ts.emplace_back([&, id] {
			weft__stack_cache c{};
			std::vector<weft__stack *> held;
			unsigned seed = (unsigned)id * 7919u + 1;
			for (int r = 0; r < rounds; r++) {
				seed = seed * 1103515245u + 12345u;
				size_t want = (seed >> 16) % 100;
				while (held.size() < want) {
					weft__stack *s =
						weft__stack_get(&pool.p, &c, 0);
					if (!s) {
						bad++;
						return;
					}
					((volatile int *)s->lo)[0] = id;
					((volatile int *)s)[-1] = id;
					held.push_back(s);
				}
				while (held.size() > want / 2) {
					weft__stack *s = held.back();
					held.pop_back();
					if (((volatile int *)s->lo)[0] != id ||
					    ((volatile int *)s)[-1] != id)
						bad++;
					weft__stack_put(&pool.p, &c, s);
				}
			}
			for (weft__stack *s : held)
				weft__stack_put(&pool.p, &c, s);
			weft__stack_cache_flush(&pool.p, &c);
		});
	}
	for (auto &t : ts)
		t.join();
	EXPECT_EQ(bad.load(), 0);
	EXPECT_EQ(pool.p.nr_free, pool.p.nr_carved);
}

// ---- overflow reporter -------------------------------------------------------------

volatile int g_stop_recursion = 0;

__attribute__((noinline)) int deep(int n)
{
	volatile char buf[512];
	buf[0] = (char)n;
	buf[511] = buf[0];
	if (g_stop_recursion)
		return buf[511];
	return deep(n + 1) + buf[0];
}

// One frame larger than the guard. -fstack-clash-protection (the build's
// flag; forced here on gcc) probes each page in order, so the overflow
// lands in the guard instead of jumping over it (RELIABILITY G2).
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("stack-clash-protection")))
#endif
__attribute__((noinline)) int
huge_frames(int n)
{
	volatile char big[64 << 10];
	big[0] = (char)n;
	big[sizeof(big) - 1] = big[0];
	if (g_stop_recursion)
		return big[5];
	return huge_frames(n + 1) + big[0] + big[sizeof(big) - 1];
}

struct OverflowRun {
	weft__ctx main, fib;
	bool huge;
};

void overflow_entry(void *arg)
{
	OverflowRun *r = static_cast<OverflowRun *>(arg);
	g_stop_recursion = r->huge ? huge_frames(0) : deep(0);
	weft__ctx_switch_final(&r->fib, &r->main);
}

// Runs in the death-test child: a worker's setup, then a task that
// overflows. Never returns.
void run_overflowing_task(bool huge, const char *name)
{
	static weft__stack_pool pool;
	weft__stack_cache cache{};
	void *alt = nullptr;
	OverflowRun r;

	if (weft__overflow_handler_install() != 0 ||
	    weft__altstack_setup(&alt) != 0 ||
	    weft__stack_pool_init(&pool, 0) != 0)
		_exit(10);
	weft__stack *s = weft__stack_get(&pool, &cache, 0);
	if (!s)
		_exit(11);
	r.huge = huge;
	weft__ctx_init_thread(&r.main);
	weft__ctx_make(&r.fib, s->lo, s->size, overflow_entry, &r);
	weft__overflow_info info{ s, name };
	weft__overflow_set_current(&info);
	weft__ctx_switch(&r.main, &r.fib);
	weft__overflow_set_current(nullptr);
	_exit(12); // the task came back: no overflow happened
}

TEST(StackOverflowDeathTest, ReportNamesTheTask)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(run_overflowing_task(false, "deep"),
		    testing::KilledBySignal(SIGABRT),
		    "weft: stack overflow in task 'deep' \\([0-9]+-byte "
		    "stack\\)");
}

TEST(StackOverflowDeathTest, FrameLargerThanGuardIsStillCaught)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
#if defined(__clang__)
	GTEST_SKIP() << "needs huge_frames() built with "
			"-fstack-clash-protection; clang has no per-function "
			"switch and the tests are not built with it";
#endif
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(run_overflowing_task(true, "big frames"),
		    testing::KilledBySignal(SIGABRT),
		    "stack overflow in task 'big frames'");
}

TEST(StackOverflowDeathTest, UnnamedTaskAndHostileName)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(run_overflowing_task(false, nullptr),
		    testing::KilledBySignal(SIGABRT),
		    "stack overflow in task '\\?'");
	EXPECT_EXIT(run_overflowing_task(false, "%n%s%x"),
		    testing::KilledBySignal(SIGABRT),
		    "stack overflow in task '%n%s%x'");
}

void null_write_after_install()
{
	if (weft__overflow_handler_install() != 0)
		_exit(10);
	void *alt;
	if (weft__altstack_setup(&alt) != 0)
		_exit(11);
	*(volatile int *)nullptr = 1;
	_exit(12);
}

void kill_self_after_install()
{
	if (weft__overflow_handler_install() != 0)
		_exit(10);
	kill(getpid(), SIGSEGV);
	_exit(12);
}

TEST(StackOverflowDeathTest, OtherFaultsCrashAsBefore)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(null_write_after_install(),
		    testing::KilledBySignal(SIGSEGV), "");
	EXPECT_EXIT(kill_self_after_install(), testing::KilledBySignal(SIGSEGV),
		    "");
}

// weft__copy_out: -EFAULT for a bad destination (twice: the signal was
// unblocked after the first), a good copy still copies, and a fault that
// is not in a copy still crashes afterwards.
void copy_out_then_null_write()
{
	if (weft__overflow_handler_install() != 0)
		_exit(10);
	void *alt;
	if (weft__altstack_setup(&alt) != 0)
		_exit(11);
	char src[64] = "payload", dst[64] = {};
	long pg = sysconf(_SC_PAGESIZE);
	char *p = (char *)mmap(nullptr, 2 * pg, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || mprotect(p + pg, pg, PROT_NONE))
		_exit(13);
	for (int i = 0; i < 2; i++) {
		if (weft__copy_out((void *)8, src, 8) != -EFAULT)
			_exit(20 + i);
		if (weft__copy_out(p + pg - 4, src, 8) != -EFAULT)
			_exit(22 + i);
	}
	if (weft__copy_out(dst, src, sizeof(src)) != 0 ||
	    strcmp(dst, "payload") != 0)
		_exit(25);
	*(volatile int *)nullptr = 1;
	_exit(12);
}

TEST(StackOverflowDeathTest, CopyOutGivesEfaultAndOtherFaultsStillCrash)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV: a plain memcpy";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(copy_out_then_null_write(),
		    testing::KilledBySignal(SIGSEGV), "");
}

void user_handler(int)
{
}

void check_dispositions()
{
	struct sigaction user, cur;
	memset(&user, 0, sizeof(user));
	user.sa_handler = user_handler;
	sigemptyset(&user.sa_mask);
	if (sigaction(SIGBUS, &user, nullptr) != 0)
		_exit(10);
	// Twice: idempotent.
	if (weft__overflow_handler_install() != 0 ||
	    weft__overflow_handler_install() != 0)
		_exit(11);
	sigaction(SIGBUS, nullptr, &cur);
	if (cur.sa_handler != user_handler)
		_exit(12); // the program's own handler was replaced
	sigaction(SIGSEGV, nullptr, &cur);
	if (weft__overflow_reporter_enabled() &&
	    (!(cur.sa_flags & SA_SIGINFO) || !(cur.sa_flags & SA_ONSTACK)))
		_exit(13); // SIGSEGV was SIG_DFL: ours now
	exit(0);
}

TEST(StackOverflowDeathTest, InstallLeavesTheProgramsHandlersAlone)
{
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(check_dispositions(), testing::ExitedWithCode(0), "");
}

// ---- overflow of a real task (RELIABILITY G1) ----------------------------------------

// Usable bytes of a stack asked for with @size: scaled, then grown until
// guard + usable + header fill whole pages (stack.c size_slot()). That is
// the N of the report, "(<N>-byte stack)".
size_t usable_for(size_t size)
{
	size_t hdr = (sizeof(weft__stack) + WEFT__CACHELINE - 1) &
		     ~(size_t)(WEFT__CACHELINE - 1);
	size_t u = std::max(size, WEFT__STACK_MIN_SIZE) * WEFT__STACK_SCALE;
	return ((u + hdr + page() - 1) & ~(page() - 1)) - hdr;
}

std::string overflow_report(const char *name, size_t n)
{
	return std::string("weft: stack overflow in task '") + name + "' \\(" +
	       std::to_string(n) + "-byte stack\\)";
}

// What the death-test child runs: a runtime of 2 workers (cfg stack size
// @runtime_stack) whose main spawns @name, by weft_spawn_named() or, with
// @task_stack, by weft_spawn_ex() with that size; the task recurses
// without bound. main then joins it (@join) or detaches it and sleeps.
struct OverflowSpec {
	const char *name;
	size_t runtime_stack, task_stack;
	bool join;
	unsigned workers;
};
OverflowSpec g_spec;

int recurse_forever(void *)
{
	g_stop_recursion = deep(0);
	return 0;
}

int spawn_overflowing_task(void *)
{
	weft_task *t = nullptr;
	if (g_spec.task_stack) {
		weft_spawn_opts o{};
		o.name = g_spec.name;
		o.stack_size = g_spec.task_stack;
		if (weft_spawn_ex(&t, &o, recurse_forever, nullptr) != 0)
			return -1;
	} else {
		t = weft_spawn_named(g_spec.name, recurse_forever, nullptr);
		if (!t)
			return -1;
	}
	if (g_spec.join)
		return weft_join(t);
	weft_detach(t);
	return weft_sleep(WEFT_SEC(30)); // the overflow ends the process first
}

void run_overflow_in_runtime(const OverflowSpec &spec)
{
	g_spec = spec;
	weft_config cfg{};
	cfg.workers = spec.workers;
	cfg.stack_size = spec.runtime_stack;
	int r = weft_run(spawn_overflowing_task, nullptr, &cfg);
	_exit(r == 0 ? 12 : 13); // no overflow was reported
}

// RELIABILITY G1: a real task (spawned by name on a running runtime, on a
// worker thread with the worker's alternate signal stack) recurses without
// bound: it dies of SIGABRT after the report naming it and its stack's
// usable size, not of a bare SIGSEGV, and does not hang. Default stack:
// a slot of a stack chunk.
TEST(StackOverflowDeathTest, RealTaskDefaultStack)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	size_t n = usable_for(WEFT__STACK_DEFAULT_SIZE);
	EXPECT_GE(n, WEFT__STACK_DEFAULT_SIZE);
	EXPECT_LT(n, WEFT__STACK_DEFAULT_SIZE + page());
	EXPECT_EXIT(run_overflow_in_runtime({ "deep-default", 0, 0, false, 2 }),
		    testing::KilledBySignal(SIGABRT),
		    overflow_report("deep-default", n));
}

// An unnamed task is reported as the dumps show it, not as ''.
TEST(StackOverflowDeathTest, RealUnnamedTask)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(run_overflow_in_runtime({ nullptr, 0, 0, true, 2 }),
		    testing::KilledBySignal(SIGABRT),
		    overflow_report("<unnamed>",
				    usable_for(WEFT__STACK_DEFAULT_SIZE)));
}

// RELIABILITY G1, small stacks: the runtime's default set to the smallest
// size (16 KiB) and the task asking for it by weft_spawn_ex(): the report
// gives that stack's size, so a guard of a small slot works as well.
TEST(StackOverflowDeathTest, RealTaskSmallStackBySpawnEx)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	const size_t small = 16 << 10;
	size_t n = usable_for(small);
	EXPECT_GE(n, small);
	EXPECT_LT(n, small + page());
	EXPECT_EXIT(
		run_overflow_in_runtime({ "deep-16k", small, small, false, 2 }),
		testing::KilledBySignal(SIGABRT),
		overflow_report("deep-16k", n));
}

// RELIABILITY G1, a stack larger than the default: weft_spawn_ex() gives
// the task a mapping of its own (stack.c WEFT__STACK_SINGLE), whose guard
// is found and whose size is reported as well.
TEST(StackOverflowDeathTest, RealTaskOwnMappingBySpawnEx)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	const size_t big = 1 << 20;
	EXPECT_EXIT(run_overflow_in_runtime({ "deep-1m", 0, big, false, 2 }),
		    testing::KilledBySignal(SIGABRT),
		    overflow_report("deep-1m", usable_for(big)));
}

// A task named "host", run inline by main, joins a child "child" that
// returns at once (also run inline, on the same stack), then recurses
// without bound. One worker: neither is started before its join.
void run_host_overflow_after_inline_child()
{
	weft_config cfg{};
	cfg.workers = 1;
	weft_run(
		[](void *) -> int {
			weft_task *host = weft_spawn_named(
				"host",
				[](void *) -> int {
					weft_task *c = weft_spawn_named(
						"child",
						[](void *) -> int {
							return 0;
						},
						nullptr);
					if (!c || weft_join(c) != 0)
						return -1;
					return recurse_forever(nullptr);
				},
				nullptr);
			return host ? weft_join(host) : -1;
		},
		nullptr, &cfg);
	_exit(12); // no overflow was reported
}

// RELIABILITY G1 through weft_join(). Symptom: a child that no worker had
// started when its owner joined it runs inline on the joiner's stack
// (task.c try_run_inline()), and its overflow was reported under the
// joiner's name ("stack overflow in task 'block_on'"): the worker's record
// for the SIGSEGV handler still named the joiner. Now checked: the report
// names the child (N is the joiner's stack, the one that overflowed), and
// once an inline child has returned, an overflow of its joiner names the
// joiner again. One worker, so no child is started before its join.
TEST(RegressDeathTest, OverflowInAChildRunInlineNamesTheChild)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV and reports "
				"overflows itself";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	size_t n = usable_for(WEFT__STACK_DEFAULT_SIZE);
	EXPECT_EXIT(run_overflow_in_runtime({ "deep-inline", 0, 0, true, 1 }),
		    testing::KilledBySignal(SIGABRT),
		    overflow_report("deep-inline", n));
	EXPECT_EXIT(run_host_overflow_after_inline_child(),
		    testing::KilledBySignal(SIGABRT),
		    overflow_report("host", n));
}

// ---- a signal while a task is almost out of stack (RELIABILITY G3) -------------------

// The task recurses until fewer than kNearGuard bytes of its stack are
// left: less than any signal frame needs (with the FPU state, over 1 KiB
// on x86-64 even without AVX; getauxval(AT_MINSIGSTKSZ) gives 3376 bytes
// with AVX-512, and aarch64 needs over 4 KiB), so a handler could not
// even be entered on the fiber stack.
constexpr uintptr_t kNearGuard = 1024;

// Shared by the task, the thread that sends the signal, and the handler.
struct NearGuard {
	// Written by the task before it sets ready (release).
	pthread_t worker;
	uintptr_t lo, size; // the task's usable stack
	uintptr_t left; // bytes of it left below the deepest frame
	stack_t alt; // the worker's alternate signal stack
	std::atomic<int> ready{ 0 };
	// Written by the handler (lock-free atomics: async-signal-safe).
	std::atomic<uintptr_t> handler_local{ 0 };
	std::atomic<int> handler_on_alt{ -1 };
	std::atomic<int> handled{ 0 };
	// Set when the sender gave up waiting (the handler never ran), or
	// after the run (the task ended before it was ready).
	std::atomic<int> give_up{ 0 };
};
NearGuard *g_ng;

void usr1_handler(int)
{
	volatile char local = 0;
	stack_t ss;
	g_ng->handler_local.store((uintptr_t)&local, std::memory_order_relaxed);
	g_ng->handler_on_alt.store(sigaltstack(nullptr, &ss) == 0 &&
					   (ss.ss_flags & SS_ONSTACK),
				   std::memory_order_relaxed);
	g_ng->handled.store(1 + local, std::memory_order_release);
}

// Recurse with 256-byte frames until the guard is near, then wait there,
// without a call that could need stack, for the signal's handler.
__attribute__((noinline)) int to_the_guard(int n)
{
	volatile char buf[256];
	buf[0] = (char)n;
	uintptr_t here = (uintptr_t)&buf[0];
	if (here - g_ng->lo >= kNearGuard)
		return to_the_guard(n + 1) + buf[0];
	g_ng->left = here - g_ng->lo;
	g_ng->ready.store(1, std::memory_order_release);
	while (!g_ng->handled.load(std::memory_order_acquire) &&
	       !g_ng->give_up.load(std::memory_order_acquire))
		;
	return n;
}

int near_guard_task(void *)
{
	void *lo = nullptr;
	size_t size = 0;
	if (stack_test_current(&lo, &size) != 0)
		return -EPERM;
	g_ng->lo = (uintptr_t)lo;
	g_ng->size = size;
	// The worker thread, read now: from here to the end the task makes
	// no suspension point, so it cannot move to another worker.
	g_ng->worker = pthread_self();
	if (sigaltstack(nullptr, &g_ng->alt) != 0 ||
	    (g_ng->alt.ss_flags & SS_DISABLE))
		return -ENOTSUP;
	int depth = to_the_guard(0);
	return depth > 0 ? 0 : -EIO;
}

// Runs a task to within kNearGuard of its guard and has another thread
// pthread_kill() SIGUSR1 to its worker there; @flags are those of the
// SIGUSR1 handler. Return: the task's status.
int signal_near_the_guard(NearGuard &ng, int flags)
{
	struct sigaction act, old;
	memset(&act, 0, sizeof(act));
	act.sa_handler = usr1_handler;
	act.sa_flags = flags;
	sigemptyset(&act.sa_mask);
	g_ng = &ng;
	if (sigaction(SIGUSR1, &act, &old) != 0)
		return -errno;
	// Sends only once the task is ready, which then spins until the
	// handler ran or the sender gave up: the worker is alive at the kill.
	std::thread sender([&ng] {
		auto end = std::chrono::steady_clock::now() +
			   std::chrono::seconds(20);
		while (!ng.ready.load(std::memory_order_acquire))
			if (ng.give_up.load() ||
			    std::chrono::steady_clock::now() > end) {
				ng.give_up.store(1);
				return;
			} else {
				usleep(100);
			}
		pthread_kill(ng.worker, SIGUSR1);
		while (!ng.handled.load(std::memory_order_acquire))
			if (std::chrono::steady_clock::now() > end) {
				ng.give_up.store(1);
				return;
			} else {
				usleep(100);
			}
	});
	weft_config cfg{};
	cfg.workers = 2;
	int status = weft_run(
		[](void *) -> int {
			weft_task *t = nullptr;
			weft_spawn_opts o{};
			o.name = "near-guard";
			o.flags = WEFT_SPAWN_PINNED; // never run inline
			int r = weft_spawn_ex(&t, &o, near_guard_task, nullptr);
			return r ? r : weft_join(t);
		},
		nullptr, &cfg);
	ng.give_up.store(1); // the task ended early: the sender stops too
	sender.join();
	sigaction(SIGUSR1, &old, nullptr);
	return status;
}

// RELIABILITY G3: SIGUSR1, whose handler asks for SA_ONSTACK, is sent
// with pthread_kill() to the worker running a task that has recursed to
// within 1 KiB of its guard page. The handler runs on the worker's
// alternate signal stack (weft__altstack_setup(); under ASan, the one
// ASan gave the thread), not on the fiber stack, where its frame could
// not fit; and the task then unwinds and finishes normally.
//
// Without SA_ONSTACK the kernel builds the signal frame right below the
// interrupted stack pointer, on the fiber stack. With this little left
// it does not fit: the kernel's write of the frame hits the guard page,
// the handler never runs, and the kernel forces a SIGSEGV (si_code
// SI_KERNEL, no address) on the thread instead, which kills the process
// (RegressDeathTest.ForcedSigsegvOfAFrameThatDidNotFitStillKills). With
// a little more room
// the frame fits and the handler's own frames run into the guard: a
// fault at a guard address, which the overflow reporter names ("stack
// overflow in task 'near-guard'"). A handler that may run while a task
// is deep in its stack must ask for SA_ONSTACK.
TEST(SignalNearTheGuard, HandlerRunsOnTheWorkersAltstack)
{
#if defined(__SANITIZE_THREAD__)
	GTEST_SKIP() << "SKIPPED: TSan defers asynchronous signals and runs "
			"the handler later from its own code, on the "
			"interrupted stack: here the fiber's last kilobyte";
#endif
	NearGuard ng;
	ASSERT_EQ(0, signal_near_the_guard(ng, SA_ONSTACK))
		<< "the task did not finish normally";
	ASSERT_EQ(1, ng.handled.load()) << "the handler never ran";
	EXPECT_LT(ng.left, kNearGuard);
	unsigned long min_frame = getauxval(AT_MINSIGSTKSZ); // 0: unknown
	if (min_frame) {
		EXPECT_LT(ng.left, min_frame) << "a signal frame would fit";
	}
	uintptr_t a = ng.handler_local.load();
	uintptr_t alt = (uintptr_t)ng.alt.ss_sp;
	EXPECT_EQ(1, ng.handler_on_alt.load()) << "SS_ONSTACK not set";
	EXPECT_TRUE(a >= alt && a < alt + ng.alt.ss_size)
		<< std::hex << a << " is not in the altstack [" << alt << ", "
		<< alt + ng.alt.ss_size << ")";
	uintptr_t guard = weft__stack_guard_size();
	EXPECT_FALSE(a >= ng.lo - guard && a < ng.lo + ng.size)
		<< "the handler ran on the fiber stack";
}

// The death-test child: the G3 run with a SIGUSR1 handler that lacks
// SA_ONSTACK. Exit 12: the signal was lost and the task went on.
void signal_near_the_guard_without_onstack()
{
	NearGuard ng;
	signal_near_the_guard(ng, 0);
	_exit(ng.handled.load() ? 13 : 12);
}

// RELIABILITY G3 without SA_ONSTACK. Symptom: the kernel could not write
// the handler's frame on the task's last kilobyte of stack and forced a
// SIGSEGV (SI_KERNEL, no fault address); the overflow reporter took it
// for a fault that is not its own, put SIG_DFL back and returned, as for
// a fault that repeats. Nothing repeated it: SIGUSR1 was lost, the task
// went on as if nothing had happened, and SIGSEGV stayed at SIG_DFL for
// the rest of the process (no more overflow reports, weft__copy_out()
// faults fatal). Without weft the process would have died of SIGSEGV. The
// reporter first raised the signal again (a bare SIGSEGV); now it sees
// that the interrupted stack pointer left less than a signal frame above
// the guard and reports the overflow by the task's name, saying why.
TEST(RegressDeathTest, ForcedSigsegvOfAFrameThatDidNotFitStillKills)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	if (UNDER_VALGRIND()) {
		// valgrind writes signal frames itself; one that does not
		// fit kills the process without calling any handler.
		EXPECT_EXIT(signal_near_the_guard_without_onstack(),
			    testing::KilledBySignal(SIGSEGV), "");
		return;
	}
	EXPECT_EXIT(signal_near_the_guard_without_onstack(),
		    testing::KilledBySignal(SIGABRT),
		    "stack overflow in task 'near-guard' \\([0-9]+-byte "
		    "stack\\)\n.*needs SA_ONSTACK");
}

#if defined(__x86_64__)
// The other SI_KERNEL SIGSEGV: a general-protection fault (here a load
// from a non-canonical address) far from the guard is no overflow. It
// repeats when the reporter steps aside, and kills the process as it
// would without weft, with no overflow report.
void general_protection_fault_in_a_task()
{
	weft_config cfg{};
	cfg.workers = 1;
	weft_run(
		[](void *) -> int {
			weft_task *t = nullptr;
			weft_spawn_opts o{};
			o.name = "gp";
			int r = weft_spawn_ex(
				&t, &o,
				[](void *) -> int {
					auto *p =
						reinterpret_cast<volatile int *>(
							0x8000000000000000ull);
					return *p;
				},
				nullptr);
			return r ? r : weft_join(t);
		},
		nullptr, &cfg);
	_exit(12);
}

// stderr without @sub (gtest has no Not/HasSubstr without gmock).
class Lacks : public testing::MatcherInterface<const std::string &>
{
public:
	explicit Lacks(const char *sub) : sub_(sub)
	{
	}
	bool MatchAndExplain(const std::string &s,
			     testing::MatchResultListener *) const override
	{
		return s.find(sub_) == std::string::npos;
	}
	void DescribeTo(std::ostream *os) const override
	{
		*os << "has no \"" << sub_ << "\"";
	}

private:
	const char *sub_;
};

TEST(RegressDeathTest, GeneralProtectionFaultIsNoOverflow)
{
	if (!weft__overflow_reporter_enabled())
		GTEST_SKIP() << "the sanitizer owns SIGSEGV";
	testing::GTEST_FLAG(death_test_style) = "threadsafe";
	EXPECT_EXIT(general_protection_fault_in_a_task(),
		    testing::KilledBySignal(SIGSEGV),
		    testing::MakeMatcher(new Lacks("overflow")));
}
#endif

// ---- alternate signal stacks ---------------------------------------------------------

TEST(Altstack, SetupAndTeardownOnAWorkerThread)
{
	std::thread t([] {
		stack_t before, during, after;
		ASSERT_EQ(sigaltstack(nullptr, &before), 0);
		void *alt = nullptr;
		ASSERT_EQ(weft__altstack_setup(&alt), 0);
		ASSERT_EQ(sigaltstack(nullptr, &during), 0);
		if (!(before.ss_flags & SS_DISABLE)) {
			// The thread had one (ASan gives every thread one).
			EXPECT_EQ(alt, nullptr);
			EXPECT_EQ(during.ss_sp, before.ss_sp);
			return;
		}
		ASSERT_NE(alt, nullptr);
		EXPECT_FALSE(during.ss_flags & SS_DISABLE);
		EXPECT_GE(during.ss_size, (size_t)64 << 10);
		EXPECT_EQ(during.ss_sp, (char *)alt + weft__stack_guard_size());
		// A second setup keeps the first.
		void *again = (void *)1;
		EXPECT_EQ(weft__altstack_setup(&again), 0);
		EXPECT_EQ(again, nullptr);
		weft__altstack_teardown(again);
		weft__altstack_teardown(alt);
		ASSERT_EQ(sigaltstack(nullptr, &after), 0);
		EXPECT_TRUE(after.ss_flags & SS_DISABLE);
	});
	t.join();
}

#ifdef WEFT_TEST_HOOKS
// The idle runtime gives memory back: after a burst of tasks, once the
// decay has passed and no task ever ends again, an idle worker trims the
// pool down to its warm stacks (worker.c park()). Without the wake-up at
// the trim deadline the pages would stay until the next burst.
TEST(StackPool, IdleRuntimeTrimsAfterTheDecay)
{
	weft_runtime *rt = nullptr;
	weft_config cfg{};
	cfg.workers = 2;
	ASSERT_EQ(0, weft_runtime_new(&rt, &cfg));
	weft_test_stack_decay_ns(rt, WEFT_MSEC(100));
	const int n = 1500;
	// Every task stays alive until all have started (an event, not a
	// sleep: a sanitizer build spawns slowly enough that a short sleep
	// would let tasks finish and recycle stacks through the worker
	// caches; and a task still unstarted at its join runs inline on the
	// joiner's stack, taking none from the pool).
	static weft_event all_spawned;
	static std::atomic<int> started{ 0 };
	started = 0;
	ASSERT_EQ(0, weft_event_init(&all_spawned));
	int ret = weft_block_on(
		rt,
		[](void *) -> int {
			std::vector<weft_task *> v;
			int err = 0;
			for (int i = 0; i < n; i++) {
				weft_task *t = weft_spawn(
					[](void *) -> int {
						volatile char buf[2000];
						buf[0] = 1;
						(void)buf;
						started.fetch_add(1);
						return weft_event_wait(
							&all_spawned);
					},
					nullptr);
				if (!t) {
					err = -ENOMEM;
					break;
				}
				v.push_back(t);
			}
			while (!err && started.load() < n)
				weft_sleep(WEFT_MSEC(1));
			weft_event_set(&all_spawned);
			for (weft_task *t : v)
				if (weft_join(t) != 0 && !err)
					err = -EIO;
			return err;
		},
		nullptr);
	weft_event_destroy(&all_spawned);
	ASSERT_EQ(ret, 0);
	unsigned long nr_free = 0, released = 0;
	weft_test_stack_counts(rt, &nr_free, &released);
	// Fresh from the burst: at most a handful released yet.
	EXPECT_GT(nr_free, (unsigned long)WEFT__STACK_POOL_WARM);
	// Nothing runs from now on; within a few seconds an idle worker must
	// have trimmed the pool down to its warm stacks.
	for (int i = 0; i < 500; i++) {
		weft_test_stack_counts(rt, &nr_free, &released);
		if (nr_free - released <= WEFT__STACK_POOL_WARM)
			break;
		usleep(10000);
	}
	EXPECT_EQ(nr_free - released, (unsigned long)WEFT__STACK_POOL_WARM)
		<< "free " << nr_free << ", released " << released;
	weft_runtime_free(rt);
}
#endif

} // namespace
