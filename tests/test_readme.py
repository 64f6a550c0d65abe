"""The README's two set-up commands are what CI runs: keep them in step."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.strip() for line in block.strip().splitlines()]


def test_readme_opens_with_install_train_and_install_test():
    install_train, install_test = readme_commands()
    assert install_train.endswith("&& python -m spin_fast.train")
    assert "python -m pytest" in install_test
    assert install_train.split("&&")[0] == install_test.split("&&")[0]
    assert "torch==2.13.0" in install_train


def test_ci_runs_the_readme_commands():
    install, test = (part.strip() for part in readme_commands()[1].split("&&"))
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci and test in ci
