"""``webssl eval ...``: run an evaluation of a cell, export an encoder to Hugging Face format,
convert published benchmark layouts to webssl's JSONL. Heavy imports stay inside the commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_cmd(
        cell_dir: Annotated[Path, typer.Argument(help="A cell's run directory (holds cell.json).")],
        task: Annotated[
            str,
            typer.Option(
                "--task", "-t", help="Stage name of the eval in cell.json (its name, or its task)."
            ),
        ],
    ) -> None:
        """Run one evaluation of a cell and write eval/<name>.json."""
        from webssl_cli.errors import UserError
        from webssl_cli.eval.run import run_eval

        if not (cell_dir / "cell.json").exists():
            raise UserError(
                f"no cell.json in {cell_dir}; give a cell directory (<study>/cells/<uid>)"
            )
        out = run_eval(cell_dir, task)
        for r in out["results"]:
            typer.echo(
                f"{r['benchmark']}\t{r.get('category') or '-'}\t{r['metric']}\t{r['value']:.4f}"
            )
        for k, v in out.get("categories", {}).items():
            typer.echo(f"[{k}]\t{v:.4f}")
        typer.echo(f"wrote {cell_dir / 'eval' / (task + '.json')}")

    @app.command("export")
    def export_cmd(
        source: Annotated[Path, typer.Argument(help="A cell directory or a teacher_backbone.pt.")],
        out_dir: Annotated[
            Path, typer.Argument(help="Directory to write config.json + model.safetensors.")
        ],
        naming: Annotated[
            str,
            typer.Option(
                help="Weight names: 'legacy' (transformers 4.x and 5.x) or 'current' (5.x)."
            ),
        ] = "legacy",
    ) -> None:
        """Export a trained backbone as a Hugging Face Dinov2Model directory."""
        from webssl_cli.errors import UserError
        from webssl_cli.eval.encoders import export_hf

        ckpt = source / "train" / "teacher_backbone.pt" if source.is_dir() else source
        if not ckpt.exists():
            raise UserError(
                f"no such checkpoint: {ckpt}; give a cell directory or a teacher_backbone.pt"
            )
        if naming not in ("legacy", "current"):
            raise UserError(f"--naming: {naming!r} is not one of legacy, current")
        export_hf(ckpt, out_dir, naming=naming)  # type: ignore[arg-type]
        typer.echo(
            f"wrote {out_dir}/config.json and model.safetensors (load with Dinov2Model.from_pretrained)"
        )

    @app.command("convert")
    def convert_cmd(
        source: Annotated[
            Path, typer.Argument(help="The benchmark's file or folder, as published.")
        ],
        out: Annotated[
            Path,
            typer.Argument(
                help="The JSONL file to write (ade20k, nyuv2, class-folder: a folder of shards)."
            ),
        ],
        layout: Annotated[
            str,
            typer.Option(
                help="mme, vlmeval-tsv, seed, gqa, scienceqa, mmmu, mathvista, chartqa, "
                "ocrbench, vqa, docvqa, mmvp, realworldqa, cvbench; classic vision: ade20k, nyuv2, "
                "class-folder (see `webssl_cli.eval.convert`)."
            ),
        ],
        benchmark: Annotated[
            str | None, typer.Option(help="vlmeval-tsv, vqa: the benchmark's name (MMBench, ...).")
        ] = None,
        annotations: Annotated[
            Path | None, typer.Option(help="vqa: the annotations JSON (VQA v2).")
        ] = None,
        image_dir: Annotated[
            Path | None,
            typer.Option(help="Where the images are (or are written, for embedded images)."),
        ] = None,
        image_pattern: Annotated[
            str, typer.Option(help="vqa: image file name from {image_id}.")
        ] = "{image_id}.jpg",
        circular: Annotated[
            bool, typer.Option(help="vlmeval-tsv: ask every rotation of the options (MMBench).")
        ] = False,
    ) -> None:
        """Convert a published benchmark layout to webssl's benchmark JSONL."""
        from webssl_cli.eval import benchmarks as B
        from webssl_cli.eval.convert import SHARD_LAYOUTS, convert, convert_to_shards

        if layout in SHARD_LAYOUTS:
            n, pattern = convert_to_shards(layout, source, out)
            typer.echo(f"wrote {n} samples to {pattern}")
            return
        qs = convert(layout, source, out, benchmark=benchmark, image_dir=image_dir,
                     annotations=annotations, circular=circular, image_pattern=image_pattern)  # fmt: skip
        B.write_jsonl(out, qs)
        typer.echo(f"wrote {len(qs)} questions to {out}")

    @app.command("score")
    def score_cmd(
        questions: Annotated[Path, typer.Argument(help="A benchmark JSONL (from convert).")],
        predictions: Annotated[
            Path,
            typer.Argument(
                help='Answers: {"<id>": "<answer>"} JSON, or {"id", "prediction"} lines.'
            ),
        ],
        details: Annotated[
            bool,
            typer.Option(
                help="Also print MME's sub-tasks, OCRBench's categories, CV-Bench's sources."
            ),
        ] = False,
    ) -> None:
        """Score a prediction file by each benchmark's own rule (MME out of 2000, OCRBench out
        of 1000, others in %)."""
        import json

        from webssl_cli.eval import benchmarks as B
        from webssl_cli.eval import metrics as M
        from webssl_cli.eval.convert import breakdowns, read_predictions, score_predictions

        qs, preds = B.read_jsonl(questions), read_predictions(predictions)
        scores, missing = score_predictions(qs, preds)
        for bench, value in sorted(scores.items()):
            # MME and OCRBench on their authors' scales (out of 2000 and 1000), others in %
            native = M.NATIVE_SCALE.get(bench)
            shown = value if native else 100.0 * value
            unit = f" of {native:.0f}" if native else " %"
            typer.echo(f"{bench}\t{shown:.2f}{unit}")
        if missing:
            typer.echo(f"{missing} question(s) without a prediction counted as empty answers")
        if details:
            typer.echo(json.dumps(breakdowns(qs, preds), indent=1, sort_keys=True))
