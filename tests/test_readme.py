"""The README starts with the two set-up commands, and CI runs the README's test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert text.index("```bash") < text.index("\n\n", text.index("# clarity_hf") + 1) + 3
    commands = readme_commands()
    assert len(commands) == 2
    assert commands[0].endswith("clarity demo") and "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    test_command = readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    # CI calls the same install steps and the same pytest invocation (plus reporting flags).
    steps = [
        step.strip().replace("pip install", "python -m pip install -q") for step in test_command.split("&&")
    ]
    ci_line = next(line for line in ci.splitlines() if "pytest" in line)
    for step in steps:
        assert step in ci_line, step


def test_ci_also_runs_the_slow_tests_the_readme_command_leaves_out():
    readme_pytest = readme_commands()[1].split("&&")[-1]
    assert '-m "not slow"' in readme_pytest
    ci_pytest = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if "pytest" in line]
    ci_pytest = [line for line in ci_pytest if not line.lstrip().startswith("#")]
    # The quick part first (the README's command), then exactly the slow part, so together they are the suite.
    assert len(ci_pytest) == 2 and '-m "not slow"' in ci_pytest[0]
    assert ci_pytest[1].startswith("HF_HUB_OFFLINE=1 python -m pytest -q -m slow")
    marker = (ROOT / "pyproject.toml").read_text()
    assert '"slow:' in marker


def test_layout_names_every_package_module_and_top_level_folder_and_nothing_else():
    text = (ROOT / "README.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named = set()
    for line in block.splitlines():
        for token in line.split():
            named.add(token.strip("(),:"))
    package = ROOT / "clarity_hf"
    modules = {p.name for p in package.glob("*.py") if p.name not in ("__init__.py", "__main__.py")}
    subpackages = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    folders = {f"{p.name}/" for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    folders -= {"build/", "dist/", "clarity_hf.egg-info/"}  # build outputs, ignored by git
    assert modules - named == set(), "modules missing from README's Layout"
    assert subpackages - named == set(), "sub-packages missing from README's Layout"
    assert folders - named == set(), "top-level folders missing from README's Layout"
    # Every file or folder it names exists somewhere in the tree (a name like `fixtures/` sits under its parent).
    present = set()
    for path in ROOT.rglob("*"):
        if ".git" not in path.relative_to(ROOT).parts:
            present.add(path.name + ("/" if path.is_dir() else ""))
    listed = {t for t in named if t.endswith((".py", "/")) and len(t) > 1 and "/" not in t[:-1]}
    assert listed - present == set(), "README's Layout names what is not there"
