/* SPDX-License-Identifier: MIT */
/*
 * examples/to_thread.c - asyncio.to_thread in weft: three blocking file
 * reads run at once on the offload pool while the workers stay free.
 *
 * The Python original:
 *
 *     async def read_file(path):
 *         return await asyncio.to_thread(Path(path).read_bytes)
 *
 *     async def main():
 *         datas = await asyncio.gather(*(read_file(p) for p in paths))
 *
 * Here each task calls weft_offload() with a plain blocking function
 * (open/read/close); the task suspends until it returns, and the request
 * lives on the task's stack. The program makes its own three files in
 * /tmp, reads them back concurrently, checks every byte and exits non-zero
 * if anything is wrong.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "weft.h"

#define NFILES 3
#define FILE_SIZE (256 * 1024)

struct read_req {
	const char *path;
	char *buf;
	size_t cap;
	ssize_t got;	/* bytes read, or -errno */
};

/* Runs on a pool thread: plain blocking calls are fine here. */
static int read_whole_file(void *arg)
{
	struct read_req *r = arg;
	int fd = open(r->path, O_RDONLY | O_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -errno;
	while (off < r->cap) {
		ssize_t n = read(fd, r->buf + off, r->cap - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = -errno;
			close(fd);
			return err;
		}
		if (n == 0)
			break;
		off += (size_t)n;
	}
	close(fd);
	r->got = (ssize_t)off;
	return 0;
}

struct reader {
	const char *path;
	char *buf;
	ssize_t got;
	int status;
};

/* A task: the "await asyncio.to_thread(...)" of the original. */
static int reader_task(void *arg)
{
	struct reader *rd = arg;
	struct read_req req = { .path = rd->path, .buf = rd->buf,
				.cap = FILE_SIZE };

	rd->status = weft_offload(read_whole_file, &req);
	rd->got = req.got;
	return rd->status;
}

static int make_file(const char *path, int seed)
{
	char *data = malloc(FILE_SIZE);
	int fd, ok;

	if (!data)
		return -ENOMEM;
	for (int i = 0; i < FILE_SIZE; i++)
		data[i] = (char)(i * 31 + seed);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ok = fd >= 0 && write(fd, data, FILE_SIZE) == FILE_SIZE;
	if (fd >= 0)
		close(fd);
	free(data);
	return ok ? 0 : -EIO;
}

static char paths[NFILES][64];

static int main_task(void *arg)
{
	struct reader rd[NFILES];
	weft_task *t[NFILES];
	int bad = 0;
	uint64_t t0 = weft_now();

	(void)arg;
	for (int i = 0; i < NFILES; i++) {
		rd[i] = (struct reader){ .path = paths[i],
					 .buf = malloc(FILE_SIZE) };
		if (!rd[i].buf)
			return -ENOMEM;
		t[i] = weft_spawn_named("reader", reader_task, &rd[i]);
		if (!t[i])
			return -errno;
	}
	for (int i = 0; i < NFILES; i++)
		weft_join(t[i]);
	for (int i = 0; i < NFILES; i++) {
		int wrong = 0;
		if (rd[i].status == 0 && rd[i].got == FILE_SIZE)
			for (int k = 0; k < FILE_SIZE; k++)
				wrong += rd[i].buf[k] != (char)(k * 31 + i);
		printf("%s: status %d, %zd bytes, %s\n", rd[i].path,
		       rd[i].status, rd[i].got, wrong ? "CORRUPT" : "ok");
		if (rd[i].status != 0 || rd[i].got != FILE_SIZE || wrong)
			bad = 1;
		free(rd[i].buf);
	}
	printf("read %d files concurrently in %.2f ms\n", NFILES,
	       (double)(weft_now() - t0) / 1e6);
	return bad ? -EIO : 0;
}

int main(void)
{
	int ret;

	for (int i = 0; i < NFILES; i++) {
		snprintf(paths[i], sizeof(paths[i]), "/tmp/weft-to-thread-%d-%d",
			 (int)getpid(), i);
		if (make_file(paths[i], i) != 0) {
			fprintf(stderr, "cannot create %s\n", paths[i]);
			return 1;
		}
	}
	ret = weft_run(main_task, NULL, NULL);
	for (int i = 0; i < NFILES; i++)
		unlink(paths[i]);
	if (ret != 0) {
		fprintf(stderr, "to_thread: failed: %s\n", strerror(-ret));
		return 1;
	}
	return 0;
}
