"""Safe YAML reading that remembers where every value came from (for one-line errors).

Only YAML's standard scalar, sequence and mapping types are built (``yaml.SafeLoader``): a tag
such as ``!!python/object`` fails with its line instead of constructing anything. A hostile
file cannot make reading it slow or deep either: size, nesting depth and the size of the
document with its aliases expanded are bounded, and control characters are refused, each with
a located one-line error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from webssl_cli.errors import UserError, did_you_mean

Loc = tuple[str | int, ...]

MAX_BYTES = 4 << 20  # a study or profile is a few kB; this leaves room and stops a flood
MAX_DEPTH = 32  # the deepest real study nests about 6 levels
MAX_NODES = 200_000  # values once aliases are expanded (an alias bomb grows exponentially)
# C0 controls except tab, newline and carriage return; DEL; C1 controls.
_CONTROL = {c for c in range(0x20) if c not in (0x09, 0x0A, 0x0D)} | {0x7F} | set(range(0x80, 0xA0))


def _check_text(text: str, path: Path, what: str) -> None:
    for i, ch in enumerate(text):
        if ord(ch) in _CONTROL:
            line = text.count("\n", 0, i) + 1
            col = i - (text.rfind("\n", 0, i) + 1) + 1
            raise UserError(
                f"{path}:{line}: control character U+{ord(ch):04X} at column {col}; "
                f"a {what} holds printable text only"
            )


def _check_depth(text: str, path: Path) -> None:
    """Nesting depth from the event stream (iterative), before anything recursive sees it."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    mark = event.start_mark
                    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
                    raise UserError(
                        f"{where}: nested more than {MAX_DEPTH} levels deep; flatten the document"
                    )
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return  # reported with its line by the real parse below


def check_yaml_text(text: str, path: Path, what: str = "file") -> None:
    """Size, control characters and nesting depth of YAML text, before it is parsed."""
    if len(text) > MAX_BYTES:
        raise UserError(f"{path}: {len(text)} characters; a {what} may hold at most {MAX_BYTES}")
    _check_text(text, path, what)
    _check_depth(text, path)


def check_yaml_aliases(text: str, path: Path) -> None:
    """Refuse a document that grows past MAX_NODES values once its aliases are expanded."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # reported with its line by the real parse
    if node is not None and _expanded_size(node, path) > MAX_NODES:
        raise _bomb(path)


def _bomb(path: Path) -> UserError:
    return UserError(
        f"{path}: more than {MAX_NODES} values once its aliases are expanded "
        "(an alias bomb?); write the values out or use fewer aliases"
    )


def _expanded_size(node: yaml.Node, path: Path) -> int:
    """Number of nodes with every alias expanded, counted without expanding (shared nodes
    are counted once per use, computed once)."""
    memo: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in memo:
            return memo[key]
        if key in open_nodes:
            raise UserError(
                f"{path}:{n.start_mark.line + 1}: an alias refers to the value that contains "
                "it; write the value out"
            )
        open_nodes.add(key)
        total = 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += size(k) + size(v)
        elif isinstance(n, yaml.SequenceNode):
            for item in n.value:
                total += size(item)
        total = min(total, MAX_NODES + 1)
        open_nodes.discard(key)
        memo[key] = total
        return total

    return size(node)


def dotted(loc: Loc) -> str:
    """('grid', 'model', 2) -> 'grid.model[2]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


class SourceMap:
    """Line numbers (1-based) of every mapping key and sequence item in a YAML document."""

    def __init__(self, path: Path, lines: dict[Loc, int]) -> None:
        self.path = path
        self.lines = lines

    def line(self, loc: Loc) -> int | None:
        # The deepest prefix of ``loc`` that the file spells out.
        # Dotted keys ("train: {crops.global_size: 64}") are one YAML key for several levels.
        for n in range(len(loc), -1, -1):
            if loc[:n] in self.lines:
                return self.lines[loc[:n]]
            for i in range(n - 1, 0, -1):
                joined = (*loc[:i], ".".join(str(p) for p in loc[i:n]))
                if joined in self.lines:
                    return self.lines[joined]
        return None

    def where(self, loc: Loc) -> str:
        line = self.line(loc)
        return f"{self.path}:{line}" if line else str(self.path)

    def error(self, loc: Loc, message: str) -> UserError:
        return UserError(f"{self.where(loc)}: {dotted(loc)}: {message}")


def _walk(node: yaml.Node, loc: Loc, lines: dict[Loc, int], path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*loc, key)
            if key in seen:
                raise UserError(
                    f"{path}:{key_node.start_mark.line + 1}: {dotted(child)}: duplicate key; give each key once"
                )
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _walk(value_node, child, lines, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[(*loc, i)] = item.start_mark.line + 1
            _walk(item, (*loc, i), lines, path)


def load_yaml(path: str | Path, *, what: str = "file") -> tuple[Any, SourceMap]:
    """Read and parse ``path``; UserError (with file and line) on anything malformed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}; check the path") from None
    except UnicodeDecodeError as exc:
        lineno = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise UserError(
            f"{path}:{lineno}: not UTF-8 text (byte {exc.object[exc.start]:#04x}); save the {what} as UTF-8"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what}: {exc.strerror or exc}") from None
    check_yaml_text(text, path, what)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise UserError(
                f"{path}:1: (top level): the {what} is empty; see studies/ for examples"
            )
        if _expanded_size(node, path) > MAX_NODES:
            raise _bomb(path)
        lines: dict[Loc, int] = {(): node.start_mark.line + 1}
        _walk(node, (), lines, path)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        problem = exc.problem or exc.context or "malformed YAML"
        if exc.problem and "could not determine a constructor" in exc.problem:
            problem = (
                f"YAML tag not allowed ({exc.problem.split('tag')[-1].strip()}); use plain values"
            )
        raise UserError(f"{path}{line}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: malformed YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise UserError(f"{path}: nested too deeply; flatten the document") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise UserError(
            f"{path}:1: (top level): expected a mapping of fields, got {type(data).__name__}"
        )
    return data, SourceMap(path, lines)


def validation_error(
    exc: ValidationError, source: SourceMap, prefix: Loc = (), model: Any = None
) -> UserError:
    """The first pydantic error as a one-line UserError naming file, line and dotted field."""
    err = exc.errors(include_url=False)[0]
    loc: Loc = (*prefix, *[p for p in err["loc"] if not (isinstance(p, str) and p in _UNION_TAGS)])
    message = err["msg"]
    if err["type"] == "extra_forbidden":
        field = loc[-1]
        options = _fields_at(model, tuple(err["loc"][:-1])) if model is not None else []
        message = f"unknown key{did_you_mean(str(field), options)}" + (
            f"; valid: {', '.join(options)}" if options else ""
        )
    elif err["type"] == "missing":
        message = "required field is missing"
    elif err["type"] in ("union_tag_invalid", "literal_error"):
        message = message.replace("Input should be", "must be")
    else:
        got = err.get("input")
        if not isinstance(got, dict | list):
            message = f"{message} (got {got!r})"
    return source.error(loc, message)


# Pydantic inserts the discriminator value into error locations of tagged unions.
_UNION_TAGS = {"knn", "linear", "segmentation", "depth", "vqa", "zeroshot", "retrieval"}
"""The evaluation tasks (``specs.evals.EVAL_TASKS``): the tags of the eval union."""


def _fields_at(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the (nested) pydantic model reached by following ``loc`` from ``model``."""
    import typing

    from pydantic import BaseModel

    current: Any = model
    skip_key = False  # the previous annotation was a dict: this part is one of its keys
    for part in loc:
        if isinstance(part, int):
            continue
        if skip_key:
            skip_key = False
            continue
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part in _UNION_TAGS:
                from webssl_cli.specs.evals import EVAL_CLASSES

                current = EVAL_CLASSES[part]
                continue
            field = current.model_fields.get(part)
            if field is None:
                return []
            current = field.annotation
        # unwrap Optional[...], list[...], dict[str, ...]
        for _ in range(3):
            if isinstance(current, type) and issubclass(current, BaseModel):
                break
            if typing.get_origin(current) is dict:
                skip_key = True
            args = [a for a in typing.get_args(current) if a is not type(None)]
            if args:
                current = args[-1]
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []
