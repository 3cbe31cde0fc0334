"""Typed evaluation configurations, one per task. Pure pydantic: no torch at import.

A study lists evaluations under ``evals:``; each becomes a stage ``eval/<name>`` of every cell
and writes ``eval/<name>.json``. ``name`` defaults to the task.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from webssl_cli.specs.base import Frozen


class _EvalBase(Frozen):
    name: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    """Stage and file name (eval/<name>.json); defaults to the task."""
    batch_size: int = Field(64, ge=1)
    """Images per forward pass of the frozen encoder."""
    image_size: int | None = Field(None, ge=8)
    """Resize side for evaluation images; None: the model's global crop size."""
    threads: int | None = Field(None, ge=1)
    """CPU threads for torch; None: the cell's ``train.threads``, else torch's default."""
    encoder: str | None = None
    """None: the cell's trained teacher (train/teacher_backbone.pt). Otherwise a baseline to
    evaluate in its place: a Hugging Face Dinov2Model directory, a teacher_backbone.pt, or
    ``timm:<name>[@<local weights>]`` (needs timm installed)."""

    @property
    def stage_name(self) -> str:
        return self.name or self.task  # type: ignore[attr-defined,no-any-return]


Baseline = Literal["random-init"]


class KnnEval(_EvalBase):
    task: Literal["knn"] = "knn"
    dataset: str = "synth-labelled"
    """Labelled data: a data source name of the study, or a path (ImageFolder with train/ and
    val/, or a webdataset shard pattern whose JSON carries ``class``)."""
    max_images: int | None = Field(None, ge=2)
    """Read at most this many labelled images (train + val; webdataset only); None: all."""
    k: int = Field(20, ge=1)
    temperature: float = Field(0.07, gt=0)
    baselines: tuple[Baseline, ...] = ("random-init",)
    """Baselines probed beside the encoder on the same images: ``random-init`` is the same
    architecture initialised as the trainer does with the cell's seed, untrained (one more
    forward pass; skipped for an ``encoder`` that is not a webssl checkpoint). ``[]``: none."""


class LinearEval(_EvalBase):
    task: Literal["linear"] = "linear"
    dataset: str = "synth-labelled"
    """Labelled data, as for knn."""
    max_images: int | None = Field(None, ge=2)
    """Read at most this many labelled images (train + val; webdataset only); None: all."""
    lrs: tuple[float, ...] = (1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1)
    """Learning-rate grid (DINOv2 linear protocol); the best on val is reported."""
    n_last_blocks: tuple[int, ...] = (1, 4)
    avgpool: tuple[bool, ...] = (False, True)
    epochs: int = Field(10, ge=1)
    baselines: tuple[Baseline, ...] = ("random-init",)
    """Baselines probed beside the encoder, as for knn."""


class _DenseEval(_EvalBase):
    dataset: str = "synth-dense"
    """Images with dense targets: a data source of the study or a shard pattern (written by
    ``webssl data synth --dense``, or ``webssl eval convert --layout ade20k|nyuv2``)."""
    max_images: int | None = Field(None, ge=2)
    """Read at most this many images (train + val); None: all."""
    head: Literal["linear", "multilayer"] = "linear"
    """DINOv2's heads: batch norm + a linear layer on the last block's patch tokens
    (``linear``), or on the last four blocks' patch tokens concatenated (``multilayer``)."""
    lrs: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3)
    """AdamW learning-rate grid; all train together, the best on val is reported."""
    epochs: int = Field(10, ge=1)
    head_batch: int = Field(16, ge=2)
    """Images per step of the heads' training."""
    label_size: int | None = Field(None, ge=8)
    """Side of the training targets (nearest-resized); None: the evaluation image size.
    Evaluation always scores at each target's own size."""
    baselines: tuple[Baseline, ...] = ("random-init",)
    """Baselines probed beside the encoder on the same images, as for knn."""


class SegmentationEval(_DenseEval):
    """DINOv2's linear segmentation probe; mIoU over the classes (ADE20K: 150, ignore 255)."""

    task: Literal["segmentation"] = "segmentation"
    n_classes: int | None = Field(None, ge=2)
    """Classes scored (labels 0..n_classes-1); None: the dataset's ``classes``, else the
    largest label seen + 1."""
    ignore_label: int | None = Field(None, ge=0, le=255)
    """Label left out of loss and mIoU; None: the dataset's (255 by default)."""


class DepthEval(_DenseEval):
    """DINOv2's linear depth probe (patch tokens + CLS); RMSE, AbsRel and δ1."""

    task: Literal["depth"] = "depth"
    mode: Literal["bins", "regression"] = "bins"
    """Depth as a classification over uniform bins (DINOv2's linear head) or a regression."""
    n_bins: int = Field(256, ge=2)
    bins_upsample: int = Field(4, ge=1)
    """Bins: the head's outputs are upsampled this much before normalisation (DINOv2: 4);
    1 normalises at the patch grid (16x cheaper on a CPU)."""
    min_depth: float = Field(1e-3, gt=0)
    max_depth: float = Field(10.0, gt=0)
    """The depth cap (NYUv2: 10 m): ground truth beyond it, or at 0, is not scored."""
    crop: Literal["none", "eigen"] = "none"
    """Evaluation crop: ``eigen`` (NYUv2's, scaled to the image size) or none."""


class VqaEval(_EvalBase):
    task: Literal["vqa"] = "vqa"
    suite: str = "synthetic"
    """'synthetic' (built from the synthetic corpus' ground truth) or a directory holding
    benchmark JSONL files in webssl's format."""
    llm: str = "tiny"
    """'tiny' (a small Llama built from a config and trained from scratch) or a local path to a
    transformers causal LM (Llama-3 8B Instruct in the paper)."""
    tokens: int = Field(576, ge=1)
    """Visual tokens after resizing the final-layer patch features (paper: 576)."""
    adapter_depth: int = Field(2, ge=1)
    stage1_lr: float = Field(1e-5, gt=0)
    stage1_batch: int = Field(512, ge=1)
    stage1_steps: int | None = Field(None, ge=0)
    stage1_lm: bool = False
    """Stage 1 trains the LM as well as the adapter (on the captions). The paper's recipe keeps
    a pretrained LM frozen there (False); an LM trained from scratch (``llm: tiny``) frozen at
    its random init gives the adapter nothing to align to, and the small-LM studies set True:
    the caption targets (each shape's colour) are what teach it to read the visual tokens."""
    stage2_captions: bool = False
    """Stage 2 trains on the stage-1 captions too (mixed with the question/answer pairs), so
    that the caption objective keeps the LM reading the image while it learns the questions."""
    stage2_lr: float = Field(4e-5, gt=0)
    stage2_batch: int = Field(512, ge=1)
    stage2_steps: int | None = Field(None, ge=0)
    seed: int = 0
    dataset: str | None = None
    """Images and ground truth of the synthetic suite: a data source of the study or a shard
    pattern. None: the source 'synth-vqa' if the cell has one, else 'synth-labelled', else the
    cell's training shards. Unused for a benchmark directory."""
    max_images: int | None = Field(None, ge=1)
    """Read at most this many images for the synthetic suite (train + test); None: all."""
    test_every: int = Field(5, ge=2)
    """Synthetic suite: one image in ``test_every`` (by key hash) is a test image, the rest
    give the training conversations."""
    max_questions: int | None = Field(None, ge=1)
    """Test questions per benchmark at most; None: all."""
    questions_per_image: int = Field(2, ge=1)
    """Synthetic suite: questions per image at most for the benchmarks an image supports
    several of (the colour of each distinct shape, the sides of several pairs)."""
    max_new_tokens: int = Field(16, ge=1)
    """Greedy generation length limit per answer."""
    lm_width: int = Field(256, ge=8)
    """Tiny LM only: hidden size (the intermediate size is 4x)."""
    lm_layers: int = Field(4, ge=1)
    """Tiny LM only: decoder layers."""
    lm_heads: int = Field(4, ge=1)
    """Tiny LM only: attention heads."""
    # ---- placement, precision, feature storage, prompts (the paper's scale) ----
    placement: Literal["auto", "single", "ddp", "fsdp"] = "auto"
    """Stage 2 over the job's ranks: 'fsdp' shards the LM (FSDP2, one unit per decoder layer),
    'ddp' replicates it, 'single' is one process. 'auto': fsdp when the job has several ranks
    and the LM has at least ``AUTO_FSDP_LM_PARAMS`` parameters, else ddp (single at one rank).
    Precision follows the device module: bf16 autocast on CUDA, fp32 on CPU."""
    activation_checkpointing: bool | None = None
    """Recompute each decoder layer in backward; None: on under fsdp, off otherwise."""
    feature_cache: Literal["memory", "disk"] = "memory"
    """Frozen features held in memory (small suites), or written once to sharded half-precision
    files under the eval's cache directory and read an image at a time (resumable)."""
    feature_dtype: Literal["fp16", "bf16"] = "fp16"
    """Precision of the on-disk feature cache."""
    feature_shard: int = Field(1024, ge=1)
    """Images per on-disk feature shard (the unit a killed build redoes)."""
    chat_template: bool = True
    """Lay prompts out with the LM's own chat template when its tokenizer has one (Llama-3
    Instruct in the paper); False, or a tokenizer without one: ``[BOS] <image> question answer:``."""
    stage1_samples: int | None = Field(None, ge=0)
    """Planning only: stage-1 examples (Cambrian's adapter data, ~1.2M); None: steps x batch."""
    stage2_samples: int | None = Field(None, ge=0)
    """Planning only: stage-2 examples (Cambrian-7M: ~7M); None: steps x batch."""
    plan_text_tokens: int = Field(256, ge=1)
    """Planning only: text tokens per example beside the visual ones."""


class ZeroShotEval(_EvalBase):
    """Zero-shot classification of a CLIP cell: each class name in ``prompts`` through the
    text tower (one mean embedding per class), each validation image to its nearest class.
    Runs only on CLIP cells (it needs ``train/text_tower.pt``)."""

    task: Literal["zeroshot"] = "zeroshot"
    dataset: str = "synth-labelled"
    """Labelled data, as for knn; the validation split is classified (nothing is fitted)."""
    max_images: int | None = Field(None, ge=2)
    """Read at most this many labelled images (train + val; webdataset only); None: all."""
    prompts: tuple[str, ...] = Field(("a photo of a {label}",), min_length=1)
    """Caption templates; ``{label}`` becomes the class name."""
    baselines: tuple[Baseline, ...] = ("random-init",)
    """``random-init``: both towers as the trainer initialises them (the cell's seed)."""


class RetrievalEval(_EvalBase):
    """Image-text retrieval of a CLIP cell on the validation images that have a caption:
    recall@1 and @5 from image to text and from text to image. A retrieved caption counts as a
    hit when its text is the query image's caption (identical captions cannot be told apart),
    a retrieved image when its caption is the query text. Runs only on CLIP cells."""

    task: Literal["retrieval"] = "retrieval"
    dataset: str = "synth-labelled"
    """Captioned data: a data source of the study or a webdataset shard pattern (``.txt``,
    ``.caption`` or a JSON ``caption``); its validation split (key hash) is searched."""
    max_images: int | None = Field(None, ge=2)
    """Read at most this many samples (train + val); None: all."""
    baselines: tuple[Baseline, ...] = ("random-init",)
    """As for zeroshot."""


EvalConfig = Annotated[
    KnnEval | LinearEval | SegmentationEval | DepthEval | VqaEval | ZeroShotEval | RetrievalEval,
    Field(discriminator="task"),
]
EVAL_TASKS = ("knn", "linear", "segmentation", "depth", "vqa", "zeroshot", "retrieval")
EVAL_CLASSES: dict[str, type[_EvalBase]] = {
    "knn": KnnEval, "linear": LinearEval, "segmentation": SegmentationEval, "depth": DepthEval,
    "vqa": VqaEval, "zeroshot": ZeroShotEval, "retrieval": RetrievalEval,
}  # fmt: skip
"""The configuration class of each task (what a study's evals are validated against)."""
CLIP_ONLY_TASKS = ("zeroshot", "retrieval")
"""Tasks that need a text tower: a study attaches them to CLIP cells only."""
AUTO_FSDP_LM_PARAMS = 1_000_000_000
"""VQA ``placement: auto`` shards LMs of this size and above (1B: 16 GB of fp32 states + AdamW)."""


def resolve_placement(placement: str, world: int, lm_params: int) -> str:
    """The stage-2 strategy for ``placement`` on ``world`` ranks with an LM of ``lm_params``."""
    if placement != "auto":
        return placement
    if world <= 1:
        return "single"
    return "fsdp" if lm_params >= AUTO_FSDP_LM_PARAMS else "ddp"
