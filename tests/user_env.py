"""The environment a user's shell has: no CI markers.

CI sets CI=true, which OpenVINO's telemetry (and NNCF's) treat as an opt-out. Tests about telemetry,
network access and signals run their process under test without those markers, or they prove nothing.
"""

from __future__ import annotations

import os

CI_MARKERS = ("CI", "TF_BUILD", "JENKINS_URL", "NNCF_CI", "NNCF_DEV")


def user_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CI_MARKERS}
    env.update(extra)
    return env
