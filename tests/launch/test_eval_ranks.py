"""What a study's jobs receive beyond the profile: the pipe opt-in, and how many ranks an
evaluation job runs (its VQA placement over the profile's eval resources)."""

from __future__ import annotations

from types import SimpleNamespace

from webssl_cli.launch.rounds import study_env


def test_jobs_learn_whether_pipes_may_run() -> None:
    allowed = SimpleNamespace(study=SimpleNamespace(data=SimpleNamespace(allow_pipe=True)))
    refused = SimpleNamespace(study=SimpleNamespace(data=SimpleNamespace(allow_pipe=False)))
    # "0" rather than nothing: a submitting shell's own WEBSSL_ALLOW_PIPE=1 does not leak in
    assert study_env(allowed) == {"WEBSSL_ALLOW_PIPE": "1"}
    assert study_env(refused) == {"WEBSSL_ALLOW_PIPE": "0"}
