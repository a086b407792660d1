"""environment.yml (conda) and pyproject.toml (pip) name the same packages."""

import re
import tomllib

from conftest import ROOT


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_packages() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for group in project["optional-dependencies"].values():
        specs.extend(group)
    names = set()
    for spec in specs:
        match = re.match(r"([A-Za-z0-9_.-]+)(\[([^\]]+)\])?", spec)
        names.add(normalise(match.group(1)))
        if match.group(3):  # extras such as dask[distributed] are packages on conda-forge
            names.update(normalise(extra) for extra in match.group(3).split(","))
    return names


def environment_packages() -> set[str]:
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"\s+-\s+([A-Za-z0-9_.-]+)\s*([<>=!].*)?$", line)
        if match and match.group(1) not in ("python", "pip", "conda-forge"):
            names.add(normalise(match.group(1)))
    return names


def test_environment_yml_matches_pyproject():
    assert environment_packages() == pyproject_packages()


def test_environment_installs_the_package_itself():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"- pip:\n\s+- -e \.", text)
    assert "conda-forge" in text and re.search(r"- python>=3\.11", text)
