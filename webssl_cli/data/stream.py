"""An endless, resampled, resumable stream of webdataset samples.

The stream is a sequence of *chunks*; chunk ``c`` of rank ``r`` reads one shard drawn with
replacement by ``Generator(seed, r, c)`` and yields its samples in blocks of ``shuffle_block``,
each block permuted by ``Generator(seed, r, c, block)``. The position ``(chunk, offset)``
therefore determines everything that follows: a run resumed at a saved position draws exactly
the samples an uninterrupted run would have drawn. Data smaller than the run repeats by
construction; ``chunks / n_shards`` counts the passes over the shard list.

Shards are local paths, brace patterns (``shard-{000000..000099}.tar``) or ``pipe:CMD``
URLs. A truncated or unreadable shard ends its chunk and is counted, never fatal. A ``pipe:``
URL runs CMD through the shell, so it is refused unless allowed: a study's
``data.allow_pipe: true`` reaches its jobs as ``WEBSSL_ALLOW_PIPE=1``.
"""

from __future__ import annotations

import os
import subprocess
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import numpy as np

from webssl_cli.errors import UserError

ALLOW_PIPE_ENV = "WEBSSL_ALLOW_PIPE"


def pipe_allowed() -> bool:
    """Whether ``pipe:`` shard URLs may run here (``$WEBSSL_ALLOW_PIPE`` is 1)."""
    return os.environ.get(ALLOW_PIPE_ENV, "").strip() == "1"


def check_pipes(urls: list[str], allow_pipe: bool | None = None) -> None:
    """A one-line UserError for the first ``pipe:`` URL unless pipes are allowed
    (``allow_pipe``, else ``$WEBSSL_ALLOW_PIPE``)."""
    allowed = pipe_allowed() if allow_pipe is None else allow_pipe
    if allowed:
        return
    for url in urls:
        if url.lstrip().startswith("pipe:"):
            raise UserError(
                f"data.shards: {url[:80]!r} is a pipe: command, which runs through the shell; "
                "set data.allow_pipe: true in the study (outside a study: WEBSSL_ALLOW_PIPE=1)"
            )


def expand_urls(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Shard URLs from a brace pattern, a ``::``-separated list or a list of either."""
    import braceexpand

    items = [spec] if isinstance(spec, str) else list(spec)
    urls: list[str] = []
    for item in items:
        for part in str(item).split("::"):
            if part.strip():
                urls.extend(braceexpand.braceexpand(part.strip()))
    return urls


@dataclass(frozen=True)
class Position:
    chunk: int = 0
    offset: int = 0  # raw samples of this chunk already consumed (bad ones included)


@dataclass
class Sample:
    key: str
    members: dict[str, bytes]
    shard: str
    position: Position  # the position *after* this sample: resume here to continue


def _open(url: str, allow_pipe: bool | None) -> tuple[IO[bytes], subprocess.Popen[bytes] | None]:
    if url.startswith("pipe:"):
        check_pipes([url], allow_pipe)
        proc = subprocess.Popen(
            url[5:], shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        assert proc.stdout is not None
        return proc.stdout, proc
    path = url[7:] if url.startswith("file://") else url
    return open(path, "rb"), None


class _Tail:
    """Reads through to a file object, remembering the last bytes: a tar cut at a block
    boundary ends without an error in ``tarfile``, and only its missing end-of-archive zero
    block tells it from a whole one."""

    def __init__(self, f: IO[bytes]) -> None:
        self.f, self.tail = f, b""

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if data:
            self.tail = (self.tail + data)[-1024:]
        return data

    def ended_cleanly(self) -> bool:
        return len(self.tail) >= 512 and not any(self.tail[-512:])


def read_shard(
    url: str, problems: Counter[str], allow_pipe: bool | None = None
) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) of one tar in file order; a bad tar ends early with a count. A
    ``pipe:`` URL is refused unless ``allow_pipe`` (None: ``$WEBSSL_ALLOW_PIPE``)."""
    current: str | None = None
    members: dict[str, bytes] = {}
    try:
        stream, proc = _open(url, allow_pipe)
    except OSError:
        problems["unreadable_shard"] += 1
        return
    try:
        tail = _Tail(stream)
        with tarfile.open(fileobj=tail, mode="r|*") as tar:  # type: ignore[call-overload]
            for info in tar:
                if not info.isfile():
                    continue
                base = os.path.basename(info.name)
                if "." not in base:
                    continue
                stem, ext = base.split(".", 1)
                key = os.path.join(os.path.dirname(info.name), stem)
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                if key != current:
                    if current is not None:
                        yield current, members
                    current, members = key, {}
                members[ext.lower()] = data
        if not tail.ended_cleanly():
            problems["truncated_tar"] += 1
        elif current is not None:
            yield current, members  # a cut shard's last sample may be incomplete: dropped
    except (tarfile.TarError, EOFError, OSError, ValueError):
        problems["truncated_tar"] += 1
    finally:
        stream.close()
        if proc is not None:
            proc.kill()
            proc.wait()


@dataclass
class ShardStream:
    """Endless sample stream of one rank; iterate it, then read ``position`` to checkpoint."""

    urls: list[str]
    seed: int = 0
    rank: int = 0
    world_size: int = 1  # every rank resamples on its own; kept for the distributed loader
    shuffle_block: int = 256
    start: Position = Position()
    problems: Counter[str] = field(default_factory=Counter)
    chunks_started: int = 0
    allow_pipe: bool | None = None
    """Run ``pipe:`` URLs; None: as ``$WEBSSL_ALLOW_PIPE`` says (a study's data.allow_pipe)."""

    def __post_init__(self) -> None:
        if not self.urls:
            raise UserError(
                "data.shards: no shard matched; give a path, brace pattern or pipe: command"
            )
        check_pipes(self.urls, self.allow_pipe)

    def shard_of(self, chunk: int) -> str:
        rng = np.random.default_rng([self.seed, self.rank, chunk])
        return self.urls[int(rng.integers(len(self.urls)))]

    def _chunk(self, chunk: int) -> Iterator[tuple[str, dict[str, bytes], str]]:
        url = self.shard_of(chunk)
        reader = read_shard(url, self.problems, self.allow_pipe)
        block_idx = 0
        while True:
            block = []
            for item in reader:
                block.append(item)
                if len(block) == self.shuffle_block:
                    break
            if not block:
                return
            order = np.random.default_rng([self.seed, self.rank, chunk, block_idx]).permutation(
                len(block)
            )
            for i in order:
                yield block[i][0], block[i][1], url
            block_idx += 1

    def __iter__(self) -> Iterator[Sample]:
        chunk, skip = self.start.chunk, self.start.offset
        empty_run = 0
        while True:
            self.chunks_started = chunk + 1
            offset = 0
            for key, members, url in self._chunk(chunk):
                offset += 1
                if offset <= skip:
                    continue
                yield Sample(key, members, url, Position(chunk, offset))
            # A long run of chunks without a sample means no shard is readable.
            empty_run = empty_run + 1 if offset == 0 else 0
            if empty_run >= max(64, 4 * len(self.urls)):
                raise UserError(
                    f"data.shards: {empty_run} shards in a row gave no sample; problems: {dict(self.problems)}"
                )
            chunk, skip = chunk + 1, 0

    def epochs(self) -> float:
        """Passes over the shard list so far (chunks started / shards)."""
        return self.chunks_started / len(self.urls)


def image_bytes(members: dict[str, Any]) -> bytes | None:
    for ext in ("jpg", "jpeg", "png", "webp", "bmp", "ppm"):
        if ext in members:
            return bytes(members[ext])
    return None
