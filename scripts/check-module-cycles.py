#!/usr/bin/env python3
"""Checks that the agent's modules import each other one way.

For every folder module of agent/src (the crate root, kernel/, collect/,
export/, ...), builds the graph of which of its child modules refers to which
other child (through `crate::...`, `super::...` or `self::...` paths) and fails
on a cycle. A child's own submodules count as the child. Run from anywhere:
    scripts/check-module-cycles.py
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "agent", "src")


def module_path(path):
    rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return rel


def refs(text, here):
    """Absolute module paths (lists) a file refers to."""
    text = re.sub(r"//[^\n]*", "", text)
    out = []
    for m in re.finditer(r"\b(crate|super|self)((?:::[a-z_][a-z0-9_]*)+)", text):
        head, tail = m.group(1), [p for p in m.group(2).split("::") if p]
        if head == "crate":
            out.append(tail)
        elif head == "super":
            out.append(here[:-1] + tail)
        else:
            out.append(here + tail)
    # use a::{b, c} inside `use crate::{...}` blocks
    for m in re.finditer(r"\b(crate|super)::\{([^;]*?)\};", text, re.S):
        base = [] if m.group(1) == "crate" else here[:-1]
        for item in re.findall(r"(?:^|[{,\s])([a-z_][a-z0-9_]*)(?=::|\s*[,}]|\s*$)", m.group(2)):
            out.append(base + [item])
    return out


def main():
    files = []
    for dirpath, _, names in os.walk(ROOT):
        for name in names:
            if name.endswith(".rs"):
                files.append(os.path.join(dirpath, name))
    graph = {}
    for path in files:
        here = module_path(path)
        # tests.rs files and #[cfg(test)] code may look anywhere.
        if here and here[-1] == "tests":
            continue
        text = open(path).read().split("#[cfg(test)]")[0]
        for target in refs(text, here):
            # Find the folder module both live in and the children involved.
            common = 0
            while common < min(len(here), len(target)) and here[common] == target[common]:
                common += 1
            if common >= len(here) or common >= len(target):
                continue  # parent/child references are not sibling edges
            parent = tuple(here[:common])
            a, b = here[common], target[common]
            if a != b:
                graph.setdefault(parent, {}).setdefault(a, set()).add(b)
    failed = False
    for parent, edges in sorted(graph.items()):
        state = {}

        def visit(node, stack):
            nonlocal failed
            state[node] = 1
            for nxt in sorted(edges.get(node, ())):
                if state.get(nxt) == 1:
                    cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                    print(f"cycle in {'::'.join(('crate',) + parent)}: {' -> '.join(cycle)}")
                    failed = True
                elif state.get(nxt) is None:
                    visit(nxt, stack + [nxt])
            state[node] = 2

        for node in sorted(edges):
            if state.get(node) is None:
                visit(node, [node])
    if failed:
        sys.exit(1)
    print("no import cycles between sibling modules of agent/src")


main()
