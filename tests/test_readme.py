"""The README's two set-up commands stay the ones CI and the CLI actually use."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def bash_blocks(text: str) -> list[str]:
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line for line in (ROOT / ".ci" / "run").read_text().splitlines()
                if line and not line.startswith(("#", "set ", "cd "))]
    # Best-effort set-up lines (`... || true`, e.g. the browser test's Chromium) may come first.
    ci_lines = [line for line in ci_lines if not line.endswith("|| true)")]
    assert len(ci_lines) == 1
    assert ci_lines[0] in bash_blocks(readme)


def test_readme_main_command_installs_and_upscales_the_example():
    first = bash_blocks((ROOT / "README.md").read_text())[0]
    assert first == '(python -c "import torch" 2>/dev/null || pip install torch==2.13.0) && pip install . && fastsr upscale --example -s 4'
