// SPDX-License-Identifier: MIT
//
// tests/io_examples_test.cc - runs the example servers as their users would:
// start, find the port on stdout, talk to them over loopback, SIGTERM, and
// check a clean exit 0. Also two echo_server processes on one port
// (SO_REUSEPORT) must both serve. The binaries are found next to this
// test's build directory (<build>/examples); without them, the tests skip.
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

namespace
{

std::string example(const char *name)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0)
		return "";
	self[n] = 0;
	std::string dir(self);
	dir = dir.substr(0, dir.rfind('/'));
	std::string p = dir + "/../examples/" + name;
	return access(p.c_str(), X_OK) == 0 ? p : "";
}

struct Server {
	pid_t pid = -1;
	int out = -1;
	int port = 0;
	std::string text;

	bool start(const std::string &bin, std::vector<std::string> args)
	{
		int p[2];
		if (pipe(p))
			return false;
		pid = fork();
		if (pid == 0) {
			dup2(p[1], 1);
			close(p[0]);
			close(p[1]);
			std::vector<char *> av;
			av.push_back((char *)bin.c_str());
			for (auto &a : args)
				av.push_back((char *)a.c_str());
			av.push_back(nullptr);
			execv(bin.c_str(), av.data());
			_exit(127);
		}
		close(p[1]);
		out = p[0];
		// First line: "listening on HOST:PORT pid PID"
		std::string line = read_line(5000);
		size_t c = line.rfind(':');
		if (line.rfind("listening on", 0) != 0 ||
		    c == std::string::npos)
			return false;
		port = atoi(line.c_str() + c + 1);
		return port > 0;
	}
	std::string read_line(int ms)
	{
		std::string l;
		char ch;
		for (;;) {
			struct pollfd pf = { out, POLLIN, 0 };
			if (poll(&pf, 1, ms) <= 0)
				return l;
			if (read(out, &ch, 1) != 1)
				return l;
			if (ch == '\n')
				return l;
			l += ch;
		}
	}
	// SIGTERM, wait (bounded), collect stdout. Return the exit status.
	int stop()
	{
		kill(pid, SIGTERM);
		int st = 0;
		for (int i = 0; i < 1000; i++) {
			if (waitpid(pid, &st, WNOHANG) == pid)
				break;
			usleep(10000);
			if (i == 999) {
				kill(pid, SIGKILL);
				waitpid(pid, &st, 0);
				return -1;
			}
		}
		char b[4096];
		ssize_t n;
		while ((n = read(out, b, sizeof(b))) > 0)
			text.append(b, (size_t)n);
		close(out);
		return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
	}
};

int dial(int port)
{
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in sa = {};
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct timeval tv = { 5, 0 };
	setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(s);
		return -1;
	}
	return s;
}

std::string recv_n(int s, size_t n)
{
	std::string r;
	char b[4096];
	while (r.size() < n) {
		ssize_t k = recv(s, b, std::min(sizeof(b), n - r.size()), 0);
		if (k <= 0)
			break;
		r.append(b, (size_t)k);
	}
	return r;
}

} // namespace

TEST(Examples, EchoServerEchoesAndDrainsOnSigterm)
{
	std::string bin = example("echo_server");
	if (bin.empty())
		GTEST_SKIP() << "SKIPPED: examples not built";
	Server s;
	ASSERT_TRUE(s.start(bin, { "-p", "0", "-w", "2" }));
	std::vector<int> open;
	for (int i = 0; i < 10; i++) {
		int c = dial(s.port);
		ASSERT_GE(c, 0);
		std::string m(100 + i * 1000, (char)('a' + i));
		ASSERT_EQ((ssize_t)m.size(),
			  send(c, m.data(), m.size(), MSG_NOSIGNAL));
		EXPECT_EQ(m, recv_n(c, m.size()));
		if (i < 3)
			open.push_back(c); // still connected at shutdown
		else
			close(c);
	}
	EXPECT_EQ(0, s.stop());
	for (int c : open) {
		char b;
		EXPECT_EQ(0, recv(c, &b, 1, 0))
			<< "connection not closed by drain";
		close(c);
	}
	EXPECT_NE(std::string::npos, s.text.find("served 10 connections"))
		<< s.text;
}

TEST(Examples, TwoProcessesShareAPortAndBothServe)
{
	std::string bin = example("echo_server");
	if (bin.empty())
		GTEST_SKIP() << "SKIPPED: examples not built";
	Server s;
	ASSERT_TRUE(s.start(bin, { "-p", "0", "-w", "1", "-P", "2" }));
	s.read_line(2000); // the second process's "listening" line
	for (int i = 0; i < 64; i++) {
		int c = dial(s.port);
		ASSERT_GE(c, 0);
		ASSERT_EQ(4, send(c, "ping", 4, MSG_NOSIGNAL));
		EXPECT_EQ("ping", recv_n(c, 4));
		close(c);
	}
	EXPECT_EQ(0, s.stop());
	// "pid P served N connections", one line per process
	int procs = 0, total = 0;
	size_t at = 0;
	while ((at = s.text.find(" served ", at)) != std::string::npos) {
		int n = atoi(s.text.c_str() + at + 8);
		EXPECT_GT(n, 0) << s.text;
		total += n;
		procs++;
		at += 8;
	}
	EXPECT_EQ(2, procs) << s.text;
	EXPECT_EQ(64, total) << s.text;
}

TEST(Examples, HttpHelloKeepAlivePipeliningAndBodies)
{
	std::string bin = example("http_hello");
	if (bin.empty())
		GTEST_SKIP() << "SKIPPED: examples not built";
	Server s;
	ASSERT_TRUE(s.start(bin, { "-p", "0", "-w", "2" }));
	const std::string ok = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			       "Content-Length: 14\r\n\r\nHello, World!\n";
	int c = dial(s.port);
	ASSERT_GE(c, 0);
	// keep-alive: two requests one after the other on one connection
	for (int i = 0; i < 2; i++) {
		std::string rq = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
		send(c, rq.data(), rq.size(), MSG_NOSIGNAL);
		EXPECT_EQ(ok, recv_n(c, ok.size()));
	}
	// pipelined, with a body split over two sends, then close
	std::string p = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
			"POST / HTTP/1.1\r\ncontent-length: 11\r\n\r\nhello";
	send(c, p.data(), p.size(), MSG_NOSIGNAL);
	usleep(20000);
	std::string q = " world"
			"GET /missing HTTP/1.1\r\n\r\n"
			"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
	send(c, q.data(), q.size(), MSG_NOSIGNAL);
	std::string all = recv_n(c, 1 << 20);
	EXPECT_EQ(ok + ok, all.substr(0, 2 * ok.size()));
	EXPECT_NE(std::string::npos, all.find("404 Not Found"));
	EXPECT_EQ(ok, all.substr(all.size() - ok.size()));
	close(c);
	// a malformed request gets 400 and a close
	c = dial(s.port);
	send(c, "BLAH\r\n\r\n", 8, MSG_NOSIGNAL);
	std::string bad = recv_n(c, 1 << 16);
	EXPECT_EQ(0u, bad.find("HTTP/1.1 400"));
	close(c);
	// RELIABILITY H8: length fields that are not plain digits, or two
	// that disagree, are refused (an empty one used to be read past, into
	// the body: tests/fuzz/http_fuzz.c); so is a head of 8 KiB or more
	// that arrives whole.
	for (const std::string &rq :
	     { std::string("GET / HTTP/1.1\r\nContent-Length:\r\n\r\n77"),
	       std::string("GET / HTTP/1.1\r\nContent-Length: 2x\r\n\r\nab"),
	       std::string("GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
	       std::string("GET / HTTP/1.1\r\nContent-Length: 1\r\n"
			   "Content-Length: 2\r\n\r\nab"),
	       "GET / HTTP/1.1\r\nX: " + std::string(9000, 'a') +
		       "\r\n\r\n" }) {
		c = dial(s.port);
		ASSERT_GE(c, 0);
		send(c, rq.data(), rq.size(), MSG_NOSIGNAL);
		bad = recv_n(c, 1 << 16);
		EXPECT_TRUE(bad.find("HTTP/1.1 400") == 0 ||
			    bad.find("HTTP/1.1 431") == 0)
			<< rq.substr(0, 60) << " got: " << bad;
		close(c);
	}
	EXPECT_EQ(0, s.stop());
}
