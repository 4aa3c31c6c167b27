"""Running a notebook where a class can get a GPU: the install cell and Colab/Kaggle links.

Both come from the repository named in ``_config.yml`` (``repository.url`` and ``branch``),
the book's one home for it:

- the *install cell* is a notebook's first code cell: it installs fernb from that repository
  when the kernel cannot import it (a fresh Colab or Kaggle session) and does nothing where
  fernb is installed (this project's environment, Binder, a class's JupyterHub);
  :func:`insert_install_cell` writes it into a notebook, replacing an older copy;
- :func:`colab_url` and :func:`kaggle_url` open a notebook of the repository in Colab or
  Kaggle; :func:`launch_table` lists them for every chapter and exercise.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fernb.chapters import project_root

INSTALL_TAG = "fernb-install"
# The book shows no install cell: it matters only where fernb is missing.
INSTALL_TAGS = [INSTALL_TAG, "remove-cell"]
_GITHUB = re.compile(r"^https://github\.com/(?P<owner>[\w.-]+)/(?P<name>[\w.-]+?)(?:\.git)?/?$")


def repository(root: Path | None = None) -> tuple[str, str]:
    """(URL, branch) of the book's repository, from ``_config.yml``."""
    root = root or project_root()
    config = yaml.safe_load((root / "_config.yml").read_text()) or {}
    repo = config.get("repository") or {}
    url = repo.get("url")
    if not url:
        raise ValueError(f"{root / '_config.yml'} names no repository.url")
    return url.rstrip("/"), repo.get("branch") or "main"


def install_spec(root: Path | None = None) -> str:
    """What pip installs: fernb from the book's repository and branch."""
    url, branch = repository(root)
    return f"fernb @ git+{url}@{branch}"


def install_cell_source(spec: str) -> str:
    """The install cell: standard library only, since it runs before fernb exists."""
    return (f"# Installs fernb where it is missing (Colab, Kaggle); does nothing where it is "
            f"installed.\n"
            f"import importlib.util, subprocess, sys\n"
            f"if importlib.util.find_spec(\"fernb\") is None:\n"
            f"    subprocess.run([sys.executable, \"-m\", \"pip\", \"install\", \"--quiet\",\n"
            f"                    \"{spec}\"], check=True)\n"
            f"    importlib.invalidate_caches()")


def install_cell(root: Path | None = None) -> Any:
    """The install cell as a notebook cell, tagged :data:`INSTALL_TAGS`."""
    import nbformat
    cell = nbformat.v4.new_code_cell(install_cell_source(install_spec(root)))
    cell.metadata["tags"] = list(INSTALL_TAGS)
    return cell


def _install_index(nb: Any) -> int | None:
    return next((i for i, c in enumerate(nb.cells)
                 if INSTALL_TAG in c.get("metadata", {}).get("tags", [])), None)


def has_current_install_cell(nb: Any, root: Path | None = None) -> bool:
    """The notebook's first code cell is the current install cell."""
    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    expected = install_cell(root)
    return (first is not None and first.source == expected.source
            and INSTALL_TAG in first.metadata.get("tags", []))


def insert_install_cell(path: Path, root: Path | None = None) -> bool:
    """Make the notebook's first code cell the current install cell: an older install cell
    is replaced, else the cell goes before the first code cell. True if the file changed."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    if has_current_install_cell(nb, root):
        return False
    old = _install_index(nb)
    cell = install_cell(root)
    if old is not None:
        cell.id = nb.cells[old].get("id", cell.id)
        del nb.cells[old]
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"),
                      len(nb.cells))
    nb.cells.insert(first_code, cell)
    nbformat.write(nb, path)
    return True


def _blob(path: str, root: Path | None, repo: tuple[str, str] | None) -> tuple[str, str]:
    url, branch = repo or repository(root)
    m = _GITHUB.match(url)
    if not m:
        raise ValueError(f"Colab and Kaggle open notebooks from GitHub; the repository "
                         f"{url!r} is not a https://github.com/OWNER/NAME address")
    return f"{m['owner']}/{m['name']}", f"blob/{branch}/{path.lstrip('/')}"


def colab_url(path: str, root: Path | None = None,
              repo: tuple[str, str] | None = None) -> str:
    """Colab's address of the repository's notebook at ``path`` (relative to its root)."""
    name, blob = _blob(path, root, repo)
    return f"https://colab.research.google.com/github/{name}/{blob}"


def kaggle_url(path: str, root: Path | None = None,
               repo: tuple[str, str] | None = None) -> str:
    """Kaggle's address that imports the repository's notebook at ``path``."""
    name, blob = _blob(path, root, repo)
    return f"https://kaggle.com/kernels/welcome?src=https://github.com/{name}/{blob}"


def launch_table(paths: list[str], root: Path | None = None,
                 repo: tuple[str, str] | None = None) -> str:
    """A Markdown table with a Colab and a Kaggle link for each notebook path."""
    rows = ["| notebook | Colab | Kaggle |", "|---|---|---|"]
    rows += [f"| `{p}` | [open in Colab]({colab_url(p, root, repo)}) | "
             f"[open in Kaggle]({kaggle_url(p, root, repo)}) |" for p in paths]
    return "\n".join(rows)
