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
        layout: Annotated[
            str, typer.Argument(help="'vqa' (VQA v2 / TextVQA JSON) or 'tsv' (VLMEvalKit TSV).")
        ],
        out: Annotated[Path, typer.Argument(help="The JSONL file to write.")],
        benchmark: Annotated[str, typer.Option(help="Benchmark name, e.g. TextVQA, MMBench.")],
        questions: Annotated[Path | None, typer.Option(help="vqa: the questions JSON.")] = None,
        annotations: Annotated[Path | None, typer.Option(help="vqa: the annotations JSON.")] = None,
        tsv: Annotated[Path | None, typer.Option(help="tsv: the VLMEvalKit TSV file.")] = None,
        image_dir: Annotated[
            Path | None, typer.Option(help="Images: read from (vqa) or written to (tsv).")
        ] = None,
        image_pattern: Annotated[
            str, typer.Option(help="vqa: image file name from {image_id}.")
        ] = "{image_id}.jpg",
        circular: Annotated[
            bool, typer.Option(help="tsv: ask every rotation of the options (MMBench).")
        ] = False,
    ) -> None:
        """Convert a published benchmark layout to webssl's benchmark JSONL."""
        from webssl_cli.errors import UserError
        from webssl_cli.eval import benchmarks as B

        image_dir = image_dir or out.parent / "images"
        if layout == "vqa":
            if questions is None or annotations is None:
                raise UserError("convert vqa: give --questions and --annotations")
            qs = B.convert_vqa(questions, annotations, image_dir, benchmark, image_pattern)
        elif layout == "tsv":
            if tsv is None:
                raise UserError("convert tsv: give --tsv")
            qs = B.convert_vlmeval_tsv(tsv, image_dir, benchmark, circular)
        else:
            raise UserError(f"layout {layout!r}: valid: vqa, tsv")
        B.write_jsonl(out, qs)
        typer.echo(f"wrote {len(qs)} questions to {out}")
