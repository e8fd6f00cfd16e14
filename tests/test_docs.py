"""The documentation stays true to the code: every setting documented, every link and
every command shown works, and the example configs pass check-config where `make run`
says they do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from pydantic import BaseModel

from receiver.cli import _parser
from receiver.config_reference import reference, splice
from receiver.settings import Settings
from sinks import sink_types
from tests.deploy.test_deploy import ENV_REF, SECRET_VALUE

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
CONFIGURATION = ROOT / "docs" / "configuration.md"
EXAMPLES = sorted((ROOT / "deploy" / "examples").glob("*.toml"))
MAKEFILE = (ROOT / "Makefile").read_text()


def text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


# -- the configuration reference ------------------------------------------------------------


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md holds exactly what `bighub-siem config-reference` prints
    (run `make docs` after changing a setting)."""
    doc = text(CONFIGURATION)
    assert splice(doc, reference()) == doc, "docs/configuration.md is out of date: run make docs"


def models() -> Iterator[tuple[str, type[BaseModel]]]:
    """(title, model) for every section of the settings and every registered sink type."""
    for section, info in Settings.model_fields.items():
        model = info.annotation
        model = next((a for a in typing.get_args(model) if a is not type(None)), model)
        if section != "sinks" and isinstance(model, type) and issubclass(model, BaseModel):
            yield section, model
    for name, cls in sink_types().items():
        yield f"sinks type={name}", cls.config_model


def keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, info in model.model_fields.items():
        yield prefix + name
        for arg in typing.get_args(info.annotation) or ():
            inner = next((a for a in typing.get_args(arg) if isinstance(a, type)), arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                yield from keys(inner, f"{prefix}{name}.")


@pytest.mark.parametrize(("title", "model"), list(models()), ids=[t for t, _ in models()])
def test_every_key_is_documented(title: str, model: type[BaseModel]) -> None:
    """Each key of each settings section and each sink type's config has a reference row."""
    doc = text(CONFIGURATION)
    missing = []
    for key in keys(model):
        head, _, leaf = key.rpartition(".")
        pattern = rf"\| `{re.escape(head)}(\.<[^>]*>)?\.{re.escape(leaf)}` \|" if head else None
        if f"| `{key}` |" not in doc and not (pattern and re.search(pattern, doc)):
            missing.append(key)
    assert not missing, f"{title}: undocumented keys {missing} (run make docs)"


def test_every_sink_type_has_a_row_in_the_sinks_page() -> None:
    """docs/sinks.md lists each registered sink type, with its page."""
    page = text(ROOT / "docs" / "sinks.md")
    missing = [t for t in sink_types() if not re.search(rf"^\| `{t}` \|", page, re.MULTILINE)]
    assert not missing


# -- pages and links ----------------------------------------------------------------------------


def test_readme_is_short() -> None:
    """The README is an entry point of at most ~300 lines; the rest lives in docs/."""
    assert len(text(README).splitlines()) <= 300


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", strip_code(text(page)), flags=re.MULTILINE):
        base = slug(heading)
        anchor, n = base, 0
        while anchor in found:
            n += 1
            anchor = f"{base}-{n}"
        found.add(anchor)
    return found


def strip_code(markdown: str) -> str:
    return re.sub(r"^```.*?^```", "", markdown, flags=re.MULTILINE | re.DOTALL)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_links_resolve(page: Path) -> None:
    """Every relative link names an existing file, and its #anchor an existing heading."""
    for target in re.findall(r"\]\(([^)\s]+)\)", strip_code(text(page))):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.name}: {target}"
        if fragment:
            assert resolved.suffix == ".md", f"{page.name}: {target}"
            assert fragment in anchors(resolved), f"{page.name}: {target}"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    """A newcomer reaches every page from the README."""
    linked = set(re.findall(r"\]\(docs/([\w-]+\.md)", text(README)))
    assert {p.name for p in DOCS} <= linked


# -- commands -------------------------------------------------------------------------------


def code_texts(page: Path) -> Iterator[str]:
    """Code blocks (line by line) and inline code spans of a page."""
    markdown = text(page)
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", markdown, flags=re.MULTILINE | re.DOTALL):
        yield from block.splitlines()
    yield from re.findall(r"`([^`\n]+)`", strip_code(markdown))


def documented_commands() -> list[tuple[str, str, str, list[str]]]:
    """(page, subcommand, next word, options) for each `bighub-siem SUB ...` in the docs
    (the next word matters for commands with their own subcommands: `ocsf preview`)."""
    found = []
    for page in PAGES:
        for code in code_texts(page):
            code = code.split(" #")[0]
            for match in re.finditer(
                r"(?:bighub-siem|python3? -m receiver) ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?(.*)",
                code,
            ):
                rest = re.split(r"(?<!\\)\|(?![a-z-]*\\?\|?[a-z]*\])|&&|;", match.group(3))[0]
                found.append(
                    (
                        page.name,
                        match.group(1),
                        match.group(2) or "",
                        re.findall(r"--[a-z][a-z-]*", rest),
                    )
                )
    return found


def help_text(sub: str, word: str = "") -> str:
    done = subprocess.run(
        [sys.executable, "-m", "receiver", sub, *([word] if word else []), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_documented_command_runs_with_help() -> None:
    """Each subcommand the docs show exists (`--help` exits 0) and has every option shown."""
    commands = documented_commands()
    assert len({sub for _, sub, _, _ in commands}) >= 8  # the extractor does find them
    subcommands = set(_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    helps: dict[tuple[str, str], str] = {}
    for page, sub, word, options in commands:
        assert sub in subcommands, f"{page}: bighub-siem {sub}"
        if (sub, word) not in helps:
            helps[sub, word] = help_text(sub, word)
        for option in options:
            assert re.search(rf"{option}\b", helps[sub, word]), (
                f"{page}: bighub-siem {sub} {option}"
            )


def test_every_documented_make_target_exists() -> None:
    """`make X` in the docs names a target of the Makefile."""
    targets = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, flags=re.MULTILINE))
    for page in PAGES:
        for code in code_texts(page):
            for target in re.findall(r"\bmake ([a-z][a-z-]*)", code):
                assert target in targets, f"{page.name}: make {target}"


# -- example configs in the venv `make run` builds ---------------------------------------------


def modules_of_extra(extra: str) -> set[str]:
    """The top-level modules the distributions of ``extra`` install."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {
        re.split(r"[\[<>=;,\s]", req, maxsplit=1)[0].lower().replace("_", "-")
        for req in project["optional-dependencies"][extra]
    }
    return {
        module
        for module, dists in packages_distributions().items()
        if any(d.lower().replace("_", "-") in wanted for d in dists)
    }


def make_run_extras() -> set[str]:
    match = re.search(r"^EXTRAS \?= (.+)$", MAKEFILE, flags=re.MULTILINE)
    assert match, "the Makefile names the extras `make run` installs"
    assert "'.[$(EXTRAS)]'" in MAKEFILE
    return set(match.group(1).split(","))


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_passes_check_config_in_the_make_run_venv(example: Path, tmp_path: Path) -> None:
    """`check-config` on each example succeeds with only the extras `make run` installs
    (the others' modules made unimportable), its env: secrets set."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    others = set(project["optional-dependencies"]) - make_run_extras() - {"test"}
    installed = {m for extra in make_run_extras() for m in modules_of_extra(extra)}
    blocked = sorted({m for extra in others for m in modules_of_extra(extra)} - installed)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIGHUB_SIEM_")}
    env.update({name: SECRET_VALUE for name in ENV_REF.findall(example.read_text())})
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from receiver.cli import main\n"
        "raise SystemExit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, "check-config", "--config", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("config ok:")
