// SPDX-License-Identifier: MIT
//
// tests/offload_support.h - helpers shared by offload_test.cc,
// offload_stress_test.cc and observe_test.cc: spawning a lambda as a task,
// capturing what the library reports on stderr (fd 2), and running a body on
// a runtime with a chosen config.
#ifndef WEFT_TESTS_OFFLOAD_SUPPORT_H
#define WEFT_TESTS_OFFLOAD_SUPPORT_H

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <functional>
#include <string>

#include "tests/harness.h"

namespace weft_test {

struct LambdaTask {
	std::function<int()> fn;
};

inline int lambda_trampoline(void *p)
{
	LambdaTask *l = static_cast<LambdaTask *>(p);
	int r = l->fn();
	delete l;
	return r;
}

// Spawn fn as a named task; the task owns the lambda.
inline weft_task *spawn_lambda(const char *name, std::function<int()> fn)
{
	LambdaTask *l = new LambdaTask{ std::move(fn) };
	weft_task *t = weft_spawn_named(name, lambda_trampoline, l);
	if (!t)
		delete l;
	return t;
}

// Redirects fd 2 into a temporary file for its lifetime; text() reads what
// was written so far. weft__report() writes to fd 2 with one write(2).
class StderrCapture {
public:
	StderrCapture()
	{
		fflush(stderr);
		saved_ = dup(2);
		char path[] = "/tmp/weft-stderr-XXXXXX";
		fd_ = mkstemp(path);
		unlink(path);
		dup2(fd_, 2);
	}
	~StderrCapture()
	{
		restore();
		close(fd_);
	}
	StderrCapture(const StderrCapture &) = delete;
	StderrCapture &operator=(const StderrCapture &) = delete;
	void restore()
	{
		if (saved_ < 0)
			return;
		fflush(stderr);
		dup2(saved_, 2);
		close(saved_);
		saved_ = -1;
	}
	std::string text()
	{
		fflush(stderr);
		std::string s;
		char buf[4096];
		off_t off = 0;
		ssize_t n;
		while ((n = pread(fd_, buf, sizeof(buf), off)) > 0) {
			s.append(buf, (size_t)n);
			off += n;
		}
		return s;
	}

private:
	int saved_ = -1;
	int fd_ = -1;
};

inline size_t count_of(const std::string &hay, const std::string &needle)
{
	size_t n = 0;
	for (size_t p = hay.find(needle); p != std::string::npos;
	     p = hay.find(needle, p + 1))
		n++;
	return n;
}

// Run fn as a task of a runtime with cfg; returns block_on's status.
inline int run_cfg(const weft_config &cfg, std::function<void()> fn)
{
	weft_runtime *rt = nullptr;
	int err = weft_runtime_new(&rt, &cfg);
	if (err)
		return err;
	Body b{ std::move(fn) };
	int r = weft_block_on(rt, run_body, &b);
	weft_runtime_free(rt);
	return r;
}

} // namespace weft_test

#endif
