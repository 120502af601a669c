"""``tests/`` mirrors the source tree: every module of the suite has its test file where the tree says it should.

The rule, for every module ``a/b/c.py`` of the suite's packages (``__init__.py`` and ``__main__.py`` aside):
``tests/a/b/test_c.py`` exists, or, for a module inside a subpackage, a package-level test of one of the subpackages
that hold it does (``tests/a/test_b.py`` for ``a/b/c.py``). Cross-package end-to-end tests live at ``tests/`` top
level and are not checked here.

The other direction is checked too, so that a mirror cannot go stale when a module is renamed or removed: a test file
``tests/a/b/test_x.py`` must name a module or subpackage of ``a/b/`` (``x.py`` or ``x/``), or be an aspect of one,
``test_<name>_<aspect>.py``; and every test folder below a package must mirror a source folder.
"""

from __future__ import annotations

from pathlib import Path

from tests.run_helpers import REPO

PACKAGES = ("benchmarks", "callbacks", "datamodules", "experiments", "lightning_modules", "vtr")
NOT_MODULES = ("__init__.py", "__main__.py")

# Modules that cannot be tested alone, with why. Keep it near empty: a module that can be imported can be tested.
UNTESTABLE: dict[str, str] = {}


def _is_package(folder: Path) -> bool:
    return (folder / "__init__.py").is_file()


def source_modules(repo: Path) -> list[Path]:
    """Every module of the suite's packages, relative to ``repo``, walking only into real (sub)packages."""
    modules: list[Path] = []
    for package in PACKAGES:
        if not _is_package(repo / package):
            continue
        folders = [repo / package]
        while folders:
            folder = folders.pop()
            for entry in sorted(folder.iterdir()):
                if entry.is_dir() and _is_package(entry):
                    folders.append(entry)
                elif entry.suffix == ".py" and entry.name not in NOT_MODULES:
                    modules.append(entry.relative_to(repo))
    return sorted(modules)


def accepted_tests(module: Path) -> list[Path]:
    """The test files that satisfy the rule for ``module`` (relative paths): its own mirror first."""
    accepted = [Path("tests", *module.parent.parts, f"test_{module.stem}.py")]
    folders = module.parent.parts
    # package-level tests: tests/a/test_b.py for every subpackage a/b/ holding the module (not the top package)
    for depth in range(len(folders), 1, -1):
        accepted.append(Path("tests", *folders[:depth - 1], f"test_{folders[depth - 1]}.py"))
    return accepted


def missing_tests(repo: Path) -> list[str]:
    """One line per module without a test file: the module and the file it should have."""
    lines = []
    for module in source_modules(repo):
        if module.as_posix() in UNTESTABLE:
            continue
        candidates = accepted_tests(module)
        if not any((repo / c).is_file() for c in candidates):
            lines.append(f"{module.as_posix()}: write {candidates[0].as_posix()}")
    return lines


def _mirrors(name: str, source_folder: Path) -> bool:
    """Whether ``name`` (a test file's stem without ``test_``) names a module or subpackage of ``source_folder``,
    itself or as ``<name>_<aspect>``."""
    words = name.split("_")
    for end in range(len(words), 0, -1):
        stem = "_".join(words[:end])
        if (source_folder / f"{stem}.py").is_file() or _is_package(source_folder / stem):
            return True
    return False


def stale_tests(repo: Path) -> list[str]:
    """One line per test file (or test folder) below a package's mirror that mirrors nothing in the source."""
    lines = []
    for package in PACKAGES:
        tests_root = repo / "tests" / package
        if not tests_root.is_dir():
            continue
        for test_file in sorted(tests_root.rglob("test_*.py")):
            relative = test_file.relative_to(repo / "tests")
            source_folder = repo / relative.parent
            if not _is_package(source_folder):
                lines.append(f"tests/{relative.as_posix()}: {relative.parent.as_posix()}/ is not a package of the "
                             "source any more; move or delete the test")
            elif not _mirrors(test_file.stem.removeprefix("test_"), source_folder):
                lines.append(f"tests/{relative.as_posix()}: no module or subpackage "
                             f"{relative.parent.as_posix()}/{test_file.stem.removeprefix('test_')}[.py] (nor a "
                             "shorter '_'-prefix of the name); rename it after the module it tests, or move it to "
                             "tests/ top level if it is end-to-end")
    return lines


def test_every_module_has_its_mirrored_test_file() -> None:
    missing = missing_tests(REPO)
    assert not missing, f"{len(missing)} module(s) without a test file:\n" + "\n".join(missing)


def test_no_mirrored_test_file_outlives_its_module() -> None:
    stale = stale_tests(REPO)
    assert not stale, f"{len(stale)} test file(s) mirror nothing in the source:\n" + "\n".join(stale)


def test_untestable_modules_exist_and_say_why() -> None:
    modules = {m.as_posix() for m in source_modules(REPO)}
    for module, reason in UNTESTABLE.items():
        assert module in modules, f"UNTESTABLE names {module}, which is not a module of the suite any more"
        assert reason.strip(), f"UNTESTABLE[{module!r}] gives no reason"


def _tree(root: Path, files: dict[str, str]) -> Path:
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


def test_the_checks_find_a_missing_mirror_and_a_stale_one(tmp_path: Path) -> None:
    repo = _tree(tmp_path, {
        "datamodules/__init__.py": "", "datamodules/a.py": "", "datamodules/b.py": "", "datamodules/__main__.py": "",
        "datamodules/sub/__init__.py": "", "datamodules/sub/x.py": "", "datamodules/sub/y.py": "",
        "lightning_modules/__init__.py": "", "lightning_modules/deep/__init__.py": "",
        "lightning_modules/deep/er/__init__.py": "", "lightning_modules/deep/er/z.py": "",
        "tests/datamodules/test_a.py": "", "tests/datamodules/test_a_errors.py": "",
        "tests/datamodules/test_gone.py": "", "tests/datamodules/sub/test_x.py": "",
        "tests/lightning_modules/test_deep.py": "", "tests/callbacks/old/test_q.py": "",
    })
    assert missing_tests(repo) == ["datamodules/b.py: write tests/datamodules/test_b.py",
                                   "datamodules/sub/y.py: write tests/datamodules/sub/test_y.py"]
    stale = stale_tests(repo)
    assert len(stale) == 2 and stale[0].startswith("tests/callbacks/old/test_q.py: callbacks/old/ is not a package")
    assert stale[1].startswith("tests/datamodules/test_gone.py: no module")
    (repo / "tests/datamodules/test_sub.py").write_text("")  # a package-level test covers the whole subpackage
    assert missing_tests(repo) == ["datamodules/b.py: write tests/datamodules/test_b.py"]
