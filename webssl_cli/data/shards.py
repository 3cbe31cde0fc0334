"""Webdataset shards: deterministic writing and bad-sample-tolerant reading.

A shard is a tar of members ``<key>.<ext>``; consecutive members with the same key form one
sample (webdataset's convention: the key is the basename up to its first dot). Writing is
byte-deterministic (fixed mtime, owner and mode) so that the same samples give the same bytes;
reading never raises on bad data: a truncated tar, an undecodable image, a sample without an
image or a member that is not an image or metadata is counted in a ``Problems`` tally and
skipped, and everything else is yielded.
"""

from __future__ import annotations

import io
import itertools
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from webssl_cli.errors import UserError

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")
META_EXTS = ("json", "txt", "cls", "id", "caption", "url")
# Dense targets beside an image (``data.dense``): a class mask and a depth map.
DENSE_EXTS = ("seg.png", "depth.png")

# Reasons a sample or member is skipped; stats and filter report counts under these names.
PROBLEMS = ("undecodable", "truncated_tar", "no_image", "non_image_member", "unreadable_shard")


@dataclass
class Sample:
    """One sample: its key, the raw bytes of each member by extension, and where it came from."""

    key: str
    members: dict[str, bytes]
    shard: str = ""

    @property
    def image_ext(self) -> str | None:
        return next((e for e in IMAGE_EXTS if e in self.members), None)

    @property
    def image_bytes(self) -> bytes | None:
        ext = self.image_ext
        return self.members[ext] if ext else None

    def meta(self) -> dict[str, Any]:
        """The sample's JSON, or {} when it has none or it does not parse."""
        import json

        raw = self.members.get("json")
        if raw is None:
            return {}
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return {}
        return obj if isinstance(obj, dict) else {}


@dataclass
class Problems:
    """Counts of skipped things by reason (see PROBLEMS), with a few example keys for the report."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < 5:
            ex.append(where)

    def merge(self, other: Problems) -> None:
        for reason, n in other.counts.items():
            self.counts[reason] += n
            ex = self.examples.setdefault(reason, [])
            ex.extend(other.examples.get(reason, [])[: max(0, 5 - len(ex))])

    def as_dict(self) -> dict[str, int]:
        return {k: int(v) for k, v in sorted(self.counts.items())}


# ---- shard lists -----------------------------------------------------------------------------
_BRACE = re.compile(r"\{(\d+)\.\.(\d+)\}")


def expand_braces(pattern: str) -> list[str]:
    """``a-{000..002}.tar`` -> three names, zero-padded like the lower bound; several ranges nest."""
    m = _BRACE.search(pattern)
    if not m:
        return [pattern]
    lo, hi = m.group(1), m.group(2)
    if int(hi) < int(lo):
        raise UserError(f"{pattern}: brace range {{{lo}..{hi}}} is empty; write {{low..high}}")
    width = len(lo)
    out: list[str] = []
    for i in range(int(lo), int(hi) + 1):
        out.extend(expand_braces(pattern[: m.start()] + f"{i:0{width}d}" + pattern[m.end() :]))
    return out


def list_shards(pattern: str) -> list[str]:
    """The shard paths a source names: a brace pattern, a glob, a directory of ``*.tar`` or a file.

    Raises UserError when nothing matches, naming the pattern.
    """
    pattern = str(pattern)
    p = Path(pattern)
    if "{" in pattern:
        paths = expand_braces(pattern)
        missing = [q for q in paths if not Path(q).exists()]
        if missing:
            raise UserError(
                f"{pattern}: {len(missing)} of {len(paths)} shards do not exist (first: {missing[0]})"
            )
        return paths
    if any(c in pattern for c in "*?["):
        import glob

        paths = sorted(glob.glob(pattern))
    elif p.is_dir():
        paths = sorted(str(q) for q in p.glob("*.tar"))
    elif p.exists():
        paths = [pattern]
    else:
        raise UserError(
            f"{pattern}: no such file or directory; give a shard, a directory or a pattern"
        )
    if not paths:
        raise UserError(f"{pattern}: no shards match; expected *.tar files")
    return paths


# ---- writing -----------------------------------------------------------------------------------
def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # fixed metadata: same samples, same bytes
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def shard_bytes(samples: Iterable[tuple[str, dict[str, bytes]]]) -> bytes:
    """A tar, as bytes, of ``(key, {ext: data})`` samples; member order follows dict order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for key, members in samples:
            if "." in key.rsplit("/", 1)[-1] or not key:
                raise ValueError(
                    f"sample key {key!r} must be non-empty with no '.' in its last part"
                )
            for ext, data in members.items():
                _tar_member(tar, f"{key}.{ext}", data)
    return buf.getvalue()


def write_shard(path: str | Path, samples: Iterable[tuple[str, dict[str, bytes]]]) -> Path:
    """Write a shard atomically (readers never see half a tar)."""
    from webssl_cli.rundir import atomic_write_bytes

    atomic_write_bytes(path, shard_bytes(samples))
    return Path(path)


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


# ---- reading ---------------------------------------------------------------------------------
def _split_name(name: str) -> tuple[str, str]:
    base = name.rsplit("/", 1)[-1]
    key, _, ext = base.partition(".")
    # Keep the directory so that "a/x.jpg" and "b/x.jpg" stay distinct samples.
    prefix = name[: len(name) - len(base)]
    return prefix + key, ext.lower()


def iter_samples(path: str | Path, problems: Problems | None = None) -> Iterator[Sample]:
    """Yield the samples of one shard, skipping and counting what is bad.

    Images are not decoded here (see ``decode_image``); a sample is yielded when it has an image
    member. A truncated or corrupt tar yields what came before the damage.
    """
    problems = problems if problems is not None else Problems()
    path = str(path)
    try:
        tar = tarfile.open(path, mode="r|*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError, EOFError):
        problems.add("unreadable_shard", path)
        return
    current_key: str | None = None
    members: dict[str, bytes] = {}
    end = 0

    def finish() -> Iterator[Sample]:
        if current_key is None:
            return
        if not any(e in members for e in IMAGE_EXTS):
            problems.add("no_image", f"{path}:{current_key}")
            return
        yield Sample(current_key, dict(members), path)

    try:
        with tar:
            for info in tar:
                if not info.isfile():
                    continue
                key, ext = _split_name(info.name)
                if not key.rsplit("/", 1)[-1]:
                    # ".png" (no key): it names no sample, and an empty key has no output name.
                    problems.add("non_image_member", f"{path}:{info.name}")
                    continue
                f = tar.extractfile(info)
                data = f.read() if f is not None else b""
                if len(data) != info.size:
                    raise EOFError("member cut short")
                if key != current_key:
                    yield from finish()
                    current_key, members = key, {}
                if ext in IMAGE_EXTS or ext in META_EXTS or ext in DENSE_EXTS:
                    members[ext] = data
                else:
                    problems.add("non_image_member", f"{path}:{info.name}")
            end = tar.offset
    except (tarfile.TarError, EOFError, OSError, ValueError):
        problems.add("truncated_tar", path)
        # The sample being read when the tar broke may be incomplete: drop it.
        return
    if not _has_end_marker(path, end):
        # Cut exactly at a member boundary: tarfile sees a clean end, but the two zero blocks
        # that close every tar are missing, and the last sample may lack members.
        problems.add("truncated_tar", path)
        return
    yield from finish()


def _has_end_marker(path: str, offset: int) -> bool:
    """The two zero blocks that close a tar follow ``offset`` (of the uncompressed stream: a
    gzip/bz2/xz shard is read through its decompressor, or its last sample would be dropped)."""
    import bz2
    import gzip
    import lzma

    try:
        with open(path, "rb") as raw:
            magic = raw.read(6)
        opener: Any = open
        if magic[:2] == b"\x1f\x8b":
            opener = gzip.open
        elif magic[:3] == b"BZh":
            opener = bz2.open
        elif magic == b"\xfd7zXZ\x00":
            opener = lzma.open
        with opener(path, "rb") as f:
            f.seek(offset)
            tail = f.read(1024)
    except (OSError, EOFError, lzma.LZMAError):
        return False
    return len(tail) == 1024 and not tail.strip(b"\0")


def iter_shards(paths: Iterable[str | Path], problems: Problems | None = None) -> Iterator[Sample]:
    problems = problems if problems is not None else Problems()
    return itertools.chain.from_iterable(iter_samples(p, problems) for p in paths)


def decode_image(data: bytes | None) -> np.ndarray | None:
    """RGB uint8 (H, W, 3) array, or None when the bytes are not a whole, decodable image."""
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # strict: a truncated file raises here (LOAD_TRUNCATED_IMAGES stays off)
            rgb = im.convert("RGB")
    except Exception:  # PIL raises many types on bad data; any of them means "undecodable"
        return None
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        return None
    return arr
