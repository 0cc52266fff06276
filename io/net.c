/* SPDX-License-Identifier: MIT */
#define _GNU_SOURCE
/*
 * io/net.c - socket helpers: weft_socket, weft_listen_tcp(_ex),
 * weft_dial_tcp. Addresses are numeric only (inet_pton): a host name gives
 * -EINVAL (name resolution would block; it can come through the offload
 * pool later). Sockets are close-on-exec and left in blocking mode: both
 * backends cope with either mode (io/calls.c).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "io/backend.h"

WEFT_API int weft_socket(int domain, int type, int protocol)
{
	int fault = weft__fault(WEFT__F_SOCKET);
	int fd = fault ? (errno = fault, -1) :
			 socket(domain, type | SOCK_CLOEXEC, protocol);

	if (fd < 0)
		return -errno;
	weft__io_stream_forget(fd);
	return fd;
}

/* Parse a numeric @host (NULL: 127.0.0.1) and @port into @ss. */
static int parse_addr(const char *host, uint16_t port,
		      struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (!host)
		host = "127.0.0.1";
	if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(port);
		*len = sizeof(*in4);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(port);
		*len = sizeof(*in6);
		return 0;
	}
	return -EINVAL;
}

WEFT_API int weft_listen_tcp_ex(const char *host, uint16_t port, int backlog,
				unsigned flags)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, one = 1, err;

	if (flags & ~WEFT_LISTEN_REUSEPORT)
		return -EINVAL;
	err = parse_addr(host, port, &ss, &len);
	if (err)
		return err;
	/* The kernel caps the backlog at net.core.somaxconn itself. */
	if (backlog <= 0)
		backlog = SOMAXCONN;
	fd = weft_socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		return fd;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		goto out_errno;
	if ((flags & WEFT_LISTEN_REUSEPORT) &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto out_errno;
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 ||
	    listen(fd, backlog) < 0)
		goto out_errno;
	return fd;

out_errno:
	err = -errno;
	close(fd);
	return err;
}

WEFT_API int weft_listen_tcp(const char *host, uint16_t port, int backlog)
{
	return weft_listen_tcp_ex(host, port, backlog, 0);
}

WEFT_API int weft_dial_tcp(const char *host, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd, err, one = 1;

	if (!weft__task_current())
		return -EPERM;
	if (!host || port == 0)
		return -EINVAL;
	err = parse_addr(host, port, &ss, &len);
	if (err)
		return err;
	fd = weft_socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		return fd;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	err = weft_connect(fd, (struct sockaddr *)&ss, len);
	if (err < 0) {
		close(fd);
		return err;
	}
	return fd;
}
