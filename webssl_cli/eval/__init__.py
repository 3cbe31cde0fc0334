"""Evaluations of a trained encoder (the ``eval/<name>`` stages of a cell).

config.py      typed eval configs (knn, linear, vqa); pure pydantic
run.py         run_eval(cell_dir, name): the job entry point, writes eval/<name>.json
encoders/      frozen encoders: own checkpoints, HF Dinov2Model dirs (both namings), export, timm,
               HF CLIPVisionModel / SiglipVisionModel dirs (reference towers)
features.py    labelled image sets (ImageFolder / webdataset) and features once per image
knn.py         temperature-weighted k-NN on cosine similarity (k=20, T=0.07)
linear.py      the DINOv2 linear protocol (last 1/4 blocks x avgpool x lr grid, best on val)
zeroshot.py    CLIP cells: zero-shot classification and image-text retrieval (both towers)
metrics/       each benchmark's scorer as its authors score it (VQA accuracy, ANLS, relaxed,
               multiple choice, MME, OCRBench, MathVista, MMMU, CV-Bench, MMVP), categories
benchmarks.py  the benchmark JSONL format and the per-benchmark scoring dispatch
convert/       the 16 benchmarks' published layouts (and VLMEvalKit TSV) -> benchmark JSONL
synth_vqa.py   the synthetic VQA suite from data.synth ground truth, LLaVA-format training data
tokenizer.py   a word-level tokenizer trained on the fly for the tiny LM
mllm.py        adapter + causal LM, the two training stages, greedy generation
vqa.py         the VQA evaluation: suite -> features -> stages -> cached answers -> scores
commands.py    `webssl eval run | export | convert | score`
"""
