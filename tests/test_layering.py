"""Imports run one way (README.md, "Code map"): leaves <- data, synth, priors <- model <- tiny (the tiny base's
machinery) <- train <- evaluate, infer and the other commands <- demo <- cli. Every `import loc3r...` of every module,
at any depth of the code, is checked against the layer of its module; and the import graph has no cycle."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "loc3r"

# layer of a module (dotted name without the "loc3r." prefix), by prefix; the longest prefix decides
LAYERS = {
    "errors": 0, "constants": 0, "io": 0, "command": 0, "parallel": 0, "assets": 0, "geometry": 1,
    "data": 2, "synth": 2, "priors": 2,
    "model": 3,
    "tiny": 4,  # the tiny preset's base: depends on the paper's model, never the reverse
    "train": 5,
    "": 6,  # the other commands: evaluate, infer, show, extract_priors
    "demo": 7,
    "cli": 8,
}
# within the layer of data, synth and priors, only synth may use data (it writes the formats data reads)
WITHIN_LAYER = {("synth", "data")}


def layer(module: str) -> tuple[int, str]:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".") or p == ""), key=len)
    return LAYERS[best], best


def imports() -> dict[str, set[str]]:
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).with_suffix("")
        name = ".".join(p for p in rel.parts if p != "__init__")
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("loc3r"):
                base = node.module[len("loc3r"):].lstrip(".")
                targets |= {f"{base}.{a.name}".lstrip(".") if not base else base for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {a.name[len("loc3r."):] for a in node.names if a.name.startswith("loc3r.")}
        graph[name] = {t for t in targets if t}
    return graph


def test_no_module_imports_a_higher_layer():
    wrong = []
    for module, targets in imports().items():
        (mine, my_group) = layer(module)
        for t in targets:
            (theirs, their_group) = layer(t)
            if theirs > mine or (theirs == mine == 2 and my_group != their_group
                                 and (my_group, their_group) not in WITHIN_LAYER):
                wrong.append(f"{module} imports {t}")
    assert not wrong, wrong


def test_import_graph_has_no_cycle():
    graph = imports()
    modules = set(graph)
    edges = {m: {t if t in modules else t.rsplit(".", 1)[0] for t in ts} & modules - {m} for m, ts in graph.items()}
    state = {}

    def visit(m, path):
        state[m] = "open"
        for t in edges[m]:
            if state.get(t) == "open":
                raise AssertionError(" -> ".join(path + [m, t]))
            if t not in state:
                visit(t, path + [m])
        state[m] = "done"

    for m in sorted(modules):
        if m not in state:
            visit(m, [])
