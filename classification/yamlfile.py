"""YAML files read safely: the safe loader (no object construction), and a bound on the document's
size with every alias expanded, checked on the parsed node graph before anything is built.

A few hundred bytes of nested aliases ("a billion laughs") parse into a small graph whose expansion
has billions of nodes; whatever walks the loaded value (validation, an error message, a JSON dump)
would then take minutes and gigabytes. Counting the expansion on the node graph, each node's size
memoised, takes time linear in the file.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from classification.errors import InputError, first_line

MAX_BYTES = 1 << 20      # a config or a run's config.yaml is a few kB
MAX_NODES = 100_000      # scalars, lists and mappings once every alias is expanded


def read_yaml(path: str | Path, what: str = "config") -> object:
    """The YAML document in `path` (None when empty), or a one-line InputError naming `what`."""
    try:
        if Path(path).stat().st_size > MAX_BYTES:
            raise InputError(f"{what} {path} is larger than {MAX_BYTES >> 10} kB; is it the right file?")
        loader = yaml.SafeLoader(Path(path).read_text())
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if expanded_size(node) > MAX_NODES:
                raise InputError(f"{what} {path} expands to more than {MAX_NODES:,} values "
                                 "(nested aliases); write the values out")
            return loader.construct_document(node)
        finally:
            loader.dispose()
    # ValueError: undecodable bytes, or a scalar resolves but cannot build (2001-02-30);
    # RecursionError: nesting deeper than the parser's recursion allows.
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"cannot read {what} {path}: {first_line(e)}") from None


def expanded_size(root: yaml.Node) -> int:
    """How many nodes `root` stands for with its aliases expanded (a node met again counts again).
    Iterative, memoised by node; a recursive alias counts its node once."""
    sizes: dict[int, int] = {}
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        if id(node) in sizes and not done:
            continue
        children = _children(node)
        if done:
            sizes[id(node)] = 1 + sum(sizes.get(id(c), 1) for c in children)
            continue
        sizes[id(node)] = 1  # provisional: a cycle back to this node counts 1
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []
