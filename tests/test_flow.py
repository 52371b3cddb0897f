"""Imports in src/r2rec flow one way: a layer imports only itself and the layers below it.

Every module is parsed with ``ast`` (nothing is imported), and every import counts, including the lazy ones
inside functions, relative ones, and registry entries written as ``"r2rec.pkg.module:Name"`` strings. Only the
block under ``if __name__ == "__main__":`` is left out: it runs when the module is the program, i.e. on top.

Three rules, each with a test of the checker itself on a synthetic tree, so a rule that could never fire shows:

- a module never imports a package of a higher layer (:data:`LAYERS`), nor one of :data:`FORBIDDEN`;
- only a command-line module (``cli.py``, ``cli_*.py``, ``r2rec.cli``) imports a command-line module, so
  stage runners stay plain library functions that the CLI, the pipeline and the server all call;
- no two packages import each other, directly or through others.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "r2rec"

# Every package and top-level module of r2rec, and its layer (an import may only point at the same or a lower
# number). A new package must be given a place here before anything can import it.
LAYERS: dict[str, int] = {
    # leaves every layer may use: the package root, typed configs, crash-safe files (atomic writes, logs,
    # fingerprints), run folders and manifests, device and precision, and the completion grammar (answer
    # format + citation form, read by prompts, model and checks)
    "r2rec": 0,
    "errors": 0,
    "config": 0,
    "io": 0,
    "log": 0,
    "runs": 0,
    "hardware": 0,
    "grammar": 0,
    "data": 1,  # loaders, the Sample schema, splits, frozen candidates
    "signals": 2,  # classical scores from the train sequences (transition, co-occurrence, popularity)
    "graph": 3,  # the train-only interaction graph, the chain sampler, chain evidence
    "prompting": 4,  # prompt config, builder, candidate order, templates: what train, eval and serve all read
    "llm": 5,  # model registry, generation with constrained answers
    "thoughts": 6,  # teachers (template, hf, openai) writing traces on the prompts, the faithfulness check
    "train": 6,  # SFT, GRPO, rewards
    "eval": 7,  # metrics, bootstrap CIs, the evaluator, result files, the LLM evaluation runner
    "baselines": 8,  # classical rankers, fitted and evaluated with eval's own metric definitions
    "report": 8,  # tables, plots, HTML from the result files
    "pipeline": 9,
    "serve": 9,
    "serve_http": 9,
    "export": 9,
    "catalogue": 9,  # whole-catalogue evaluation: retrieval (baselines) + the LLM re-ranker (eval's runner)
    "cli": 9,  # on top: they call the stage runners
}

# Imports the layer order allows but the design does not.
FORBIDDEN: dict[tuple[str, str], str] = {
    ("eval", "train"): "the yardstick must not depend on what it measures",
}

_BY_NAME = re.compile(r"^(r2rec(?:\.\w+)+):\w+$")  # a lazy registry entry, "r2rec.pkg.module:Name"


def module_names(root: Path) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under the package directory ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def is_cli(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return module == "r2rec.cli" or (module.count(".") >= 2 and (last == "cli" or last.startswith("cli_")))


def package(module: str) -> str:
    """The top-level name a module belongs to: ``r2rec.eval.runner`` -> ``eval``, ``r2rec.serve`` -> ``serve``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _nodes(tree: ast.Module):
    """Every node except those under a top-level ``if __name__ == "__main__":``."""
    for stmt in tree.body:
        if (
            isinstance(stmt, ast.If)
            and isinstance(stmt.test, ast.Compare)
            and isinstance(stmt.test.left, ast.Name)
            and stmt.test.left.id == "__name__"
        ):
            continue
        yield from ast.walk(stmt)


def imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The r2rec modules that ``module`` imports (a name imported from a package counts as its submodule
    when there is one: ``from r2rec.eval import cli`` imports ``r2rec.eval.cli``)."""
    here = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in _nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "r2rec")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "r2rec":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in known else target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (m := _BY_NAME.match(node.value)):
            out.add(m.group(1))
    out.discard(module)
    return out


def violations(root: Path = SRC) -> list[str]:
    """Every import under the package directory ``root`` that goes against the flow (empty = it holds)."""
    mods = module_names(root)
    bad, edges = [], {}
    for name in sorted({package(m) for m in mods} - set(LAYERS)):
        bad.append(f"r2rec.{name} has no layer: give it one in tests/test_flow.py LAYERS")
    for module, path in mods.items():
        src = package(module)
        for target in sorted(imports(module, path, set(mods))):
            dst = package(target)
            if dst not in LAYERS:
                bad.append(f"{module} imports {target}, which has no layer")
            elif src in LAYERS and LAYERS[dst] > LAYERS[src]:
                bad.append(
                    f"{module} imports {target}: {src} (layer {LAYERS[src]}) is below {dst} (layer {LAYERS[dst]})"
                )
            if (src, dst) in FORBIDDEN:
                bad.append(f"{module} imports {target}: {FORBIDDEN[src, dst]}")
            if is_cli(target) and not is_cli(module):
                bad.append(f"{module} imports the command-line module {target}: call the stage's runner instead")
            if src != dst and module.count(".") and target.count("."):
                edges.setdefault(src, set()).add(dst)
    seen: set[frozenset] = set()
    for start in sorted(edges):
        cycle = _cycle(edges, start)
        if cycle and frozenset(cycle) not in seen:
            seen.add(frozenset(cycle))
            bad.append("package cycle: " + " -> ".join(cycle))
    return bad


def _cycle(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest path of package imports from ``start`` back to itself, or None."""
    paths, visited = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for nxt in sorted(edges.get(path[-1], ())):
            if nxt == start:
                return path + [start]
            if nxt not in visited:
                visited.add(nxt)
                paths.append(path + [nxt])
    return None


# -- the code ---------------------------------------------------------------------------------------------
def test_imports_follow_the_flow():
    assert violations() == []


# -- the checker, on synthetic trees ----------------------------------------------------------------------
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "r2rec"
    for rel, text in {"__init__.py": "", **files}.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:  # every folder is a package
            (root / parent / "__init__.py").touch()
        path.write_text(text)
    return root


# A small tree that follows the flow: the violations below each add one import to it.
CLEAN = {
    "data/schema.py": "import json\n",
    "graph/graph.py": "from r2rec.data.schema import json\n",
    "train/rewards.py": "from ..graph import graph\nfrom ..llm import generate\n",
    "llm/generate.py": "from r2rec.graph.graph import json\n",
    "thoughts/stage.py": "from r2rec.train.rewards import graph\n",
    "eval/metrics.py": "import numpy\n",
    "eval/runner.py": "def run():\n    from r2rec.llm import generate\n    from .metrics import numpy\n",
    "eval/cli.py": "from r2rec.eval.runner import run\n",
    "baselines/base.py": 'REGISTRY = {"pop": "r2rec.baselines.simple:Pop"}\n',
    "baselines/simple.py": "from r2rec.baselines.base import REGISTRY\n",
    "baselines/cli.py": "from r2rec.baselines.simple import REGISTRY\n"
    "if __name__ == '__main__':\n    from r2rec.cli import main\n",
    "pipeline.py": "from r2rec.eval.runner import run\n",
    "cli.py": "COMMANDS = {'eval': 'r2rec.eval.cli'}\n",
}


def test_the_checker_passes_a_tree_that_follows_the_flow(tmp_path):
    assert violations(_tree(tmp_path, CLEAN)) == []


@pytest.mark.parametrize(
    "module, line, expected",
    [
        # the yardstick importing what it measures, absolute, relative and lazy
        ("eval/metrics.py", "from r2rec.train import rewards", "metrics imports r2rec.train.rewards: the yardstick"),
        ("eval/metrics.py", "from ..train.rewards import json", "metrics imports r2rec.train.rewards: the yardstick"),
        ("eval/metrics.py", "def f():\n    import r2rec.train.rewards", "imports r2rec.train.rewards: the yardstick"),
        # a lower layer importing a higher one, also through a lazy registry entry
        (
            "data/schema.py",
            "def f():\n    from r2rec.graph.graph import json",
            "data (layer 1) is below graph (layer 3)",
        ),
        (
            "graph/graph.py",
            'REG = {"evidence": "r2rec.baselines.simple:Evidence"}',
            "graph (layer 3) is below baselines",
        ),
        ("llm/generate.py", "from r2rec.eval import metrics", "llm (layer 5) is below eval (layer 7)"),
        # library code importing a command-line module
        ("pipeline.py", "from r2rec.eval import cli", "r2rec.pipeline imports the command-line module r2rec.eval.cli"),
        ("eval/runner.py", "from .cli import run", "r2rec.eval.runner imports the command-line module r2rec.eval.cli"),
        # two packages of one layer importing each other
        ("train/rewards.py", "from r2rec.thoughts import stage", "package cycle: thoughts -> train -> thoughts"),
        # a package nobody placed
        ("newpkg/thing.py", "", "r2rec.newpkg has no layer"),
    ],
)
def test_the_checker_catches(tmp_path, module, line, expected):
    files = dict(CLEAN)
    files[module] = files.get(module, "") + line + "\n"
    found = violations(_tree(tmp_path, files))
    assert any(expected in v for v in found), found
