"""`webssl data ...`: synth, shard, stats, filter. Parsing only; the work is in the modules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from webssl_cli.errors import UserError


def _source_name(src: str) -> str:
    p = Path(src.split("{")[0].rstrip("/"))
    # A pattern like /x/corpus/shard-{..}.tar names its folder; a folder names itself.
    return (
        p.parent.name
        if ("{" in src or p.suffix == ".tar" or p.name.startswith("shard-"))
        else p.name
    )


def _parse_ids(text: str | None) -> list[int] | None:
    if text is None:
        return None
    ids: list[int] = []
    for part in filter(None, (t.strip() for t in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            ids.extend(range(int(lo), int(hi) + 1) if sep else [int(lo)])
        except ValueError:
            raise UserError(f"--shards: {part!r} is not an index or a range like 0-7") from None
    return ids


def _filter_worker(args: tuple[str, str, str, str, list[int], str | None]) -> dict[str, Any]:
    from webssl_cli.data.filtering import run_filter_shards

    src, filt, clf, out, ids, vlm = args
    return run_filter_shards(src, filt, clf, Path(out), shard_ids=ids, vlm_path=vlm)


def register(app: typer.Typer) -> None:
    @app.command("synth")
    def synth(
        out: Annotated[Path, typer.Argument(help="Output directory for shard-000000.tar, ...")],
        n: Annotated[int, typer.Option("--n", help="Number of images.")] = 2048,
        seed: Annotated[
            int, typer.Option(help="Seed; the same seed gives byte-identical shards.")
        ] = 0,
        shard_size: Annotated[int, typer.Option(help="Images per shard.")] = 256,
        image_size: Annotated[
            int, typer.Option(help="Longest side of the images in pixels.")
        ] = 224,
        mix: Annotated[
            str | None,
            typer.Option(
                help="Proportions of kinds, e.g. natural=0.5,scene_text=0.3,chart=0.1,document=0.05,table=0.05."
            ),
        ] = None,
        dense: Annotated[
            bool,
            typer.Option(
                help="Write scenes with class masks (.seg.png) and depth maps (.depth.png, mm) "
                "for the segmentation and depth probes instead (--mix does not apply)."
            ),
        ] = False,
    ) -> None:
        """Write a deterministic synthetic web-like corpus (JPEG + JSON ground truth)."""
        from webssl_cli.data.synth import shard_pattern, synthesize

        if dense:
            from webssl_cli.data.dense import synthesize_dense

            paths = synthesize_dense(
                out, n=n, seed=seed, shard_size=shard_size, image_size=image_size
            )
            typer.echo(f"wrote {n} dense scenes in {len(paths)} shards: {shard_pattern(paths)}")
            return
        paths = synthesize(
            out, n=n, seed=seed, shard_size=shard_size, image_size=image_size, mix=mix
        )
        typer.echo(f"wrote {n} samples in {len(paths)} shards: {shard_pattern(paths)}")

    @app.command("shard")
    def shard(
        src: Annotated[
            Path, typer.Argument(help="Image folder, img2dataset tar shards or Parquet.")
        ],
        out: Annotated[Path, typer.Argument(help="Output directory.")],
        shard_size: Annotated[int, typer.Option(help="Samples per shard.")] = 1000,
        check: Annotated[bool, typer.Option(help="Decode every image and skip bad ones.")] = True,
    ) -> None:
        """Pack images into webdataset shards of a target size with stable keys."""
        from webssl_cli.data.packing import pack

        res = pack(src, out, shard_size=shard_size, check=check)
        skipped = ", ".join(f"{k} {v}" for k, v in res["skipped"].items()) or "none"
        typer.echo(
            f"wrote {res['samples']} samples in {len(res['shards'])} shards to {out} (skipped: {skipped})"
        )

    @app.command("stats")
    def stats(
        src: Annotated[
            str,
            typer.Argument(
                help="Shards: a directory, a file, a glob or a brace pattern; or a filter directory."
            ),
        ],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
        decode: Annotated[
            bool, typer.Option(help="Decode images (finds corrupt ones; slower).")
        ] = True,
    ) -> None:
        """Counts, bytes, image sizes, decode failures and label/filter fractions of a source."""
        from webssl_cli.data.stats import format_stats, source_stats

        filt = None
        p = Path(src)
        if (p / "manifest.json").exists():  # a filter directory: report its kept shards too
            from webssl_cli.data.filtering import filter_stats

            filt = filter_stats(p)
            src = str(p / "shards")
        result = source_stats(src, decode=decode)
        if filt is not None:
            result["filter"] = filt
        typer.echo(json.dumps(result, indent=2) if as_json else format_stats(result))
        if result["samples"] == 0:
            raise UserError(f"{src}: no usable samples (skipped: {result['skipped'] or 'none'})")

    @app.command("tokenizer")
    def tokenizer_cmd(
        src: Annotated[
            str, typer.Argument(help="Training shards, as the cell names them (brace pattern).")
        ],
        vocab_size: Annotated[
            int, typer.Option(help="Target vocabulary (train.clip.vocab_size).")
        ] = 49408,
    ) -> None:
        """Learn the caption tokenizer (byte-level BPE) of a source and cache it beside its
        shards, where CLIP training finds it (it is otherwise built on a run's first start)."""
        from webssl_cli.data.bpe import tokenizer_for
        from webssl_cli.data.stream import expand_urls

        if vocab_size < 260:
            raise UserError(f"--vocab-size: {vocab_size} must be at least 260")
        tok, where = tokenizer_for(expand_urls(src), vocab_size)
        typer.echo(f"tokenizer of {src}: {tok.vocab_size} ids -> {where or '(not cached)'}")

    @app.command("filter")
    def filter_cmd(
        src: Annotated[
            str, typer.Argument(help="Source shards: a directory, a glob or a brace pattern.")
        ],
        filter: Annotated[
            str,
            typer.Option(
                "--filter", help="light (any readable text) or heavy (charts, tables, documents)."
            ),
        ],
        classifier: Annotated[
            str,
            typer.Option(
                help="ocr (offline text detector), vlm (SmolVLM2-class model) or label (ground truth)."
            ),
        ] = "ocr",
        out: Annotated[
            Path | None,
            typer.Option(
                help="Filter directory [default: ./filters/<source>-<filter>-<classifier>-v<version>]."
            ),
        ] = None,
        vlm_path: Annotated[
            str | None,
            typer.Option(
                help="Local directory of the vision-language model (for --classifier vlm)."
            ),
        ] = None,
        workers: Annotated[
            int, typer.Option(help="Processes, each taking a share of the shards.")
        ] = 1,
        shards: Annotated[
            str | None, typer.Option(help="Only these shard indices, e.g. 0-3,7 (for array jobs).")
        ] = None,
        as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    ) -> None:
        """Classify every sample; write keep.parquet, filtered shards and stats.json. Resumable."""
        from webssl_cli.data.classifiers import check_choice
        from webssl_cli.data.filtering import filter_key, list_shards, run_filter_shards

        check_choice(filter, classifier)
        if workers < 1:
            raise UserError(f"--workers: {workers} must be at least 1")
        if classifier == "vlm" and not vlm_path:
            raise UserError(
                "--classifier vlm needs --vlm-path: a local SmolVLM2-class model directory"
            )
        out_dir = out or Path("filters") / filter_key(_source_name(src), filter, classifier)
        ids = _parse_ids(shards)
        n_shards = len(list_shards(src))
        all_ids = list(range(n_shards)) if ids is None else ids
        if workers > 1 and len(all_ids) > 1:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            parts = [all_ids[i::workers] for i in range(min(workers, len(all_ids)))]
            jobs = [(src, filter, classifier, str(out_dir), part, vlm_path) for part in parts]
            # spawn: forked children would inherit onnxruntime/torch thread pools in a bad state.
            with ProcessPoolExecutor(len(parts), mp_context=mp.get_context("spawn")) as pool:
                done = list(pool.map(_filter_worker, jobs))
            res = run_filter_shards(
                src, filter, classifier, out_dir, shard_ids=[], vlm_path=vlm_path
            )
            res["processed"] = sorted(i for d in done for i in d["processed"])
            res["already_done"] = sorted(i for d in done for i in d["already_done"])
        else:
            res = run_filter_shards(
                src, filter, classifier, out_dir, shard_ids=all_ids, vlm_path=vlm_path
            )
        st = res.get("stats")
        if as_json:
            typer.echo(json.dumps(res, indent=2, default=str))
        elif st is None:
            typer.echo(
                f"{out_dir}: processed shards {res['processed']}; the filter is not complete yet"
            )
        else:
            skipped = ", ".join(f"{k} {v}" for k, v in st["skipped"].items()) or "none"
            typer.echo(
                f"{out_dir}: kept {st['kept']} of {st['total']} ({st['fraction']:.3f}); "
                f"skipped: {skipped}; processed {len(res['processed'])} shards, "
                f"{len(res['already_done'])} already done; "
                f"{st.get('images_per_cpu_s') or 0:g} images per CPU-second"
            )
        if st is not None and st["total"] == 0:
            raise UserError(
                f"{src}: no usable samples to filter (skipped: {st['skipped'] or 'none'})"
            )
