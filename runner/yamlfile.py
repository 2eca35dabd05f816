"""A fast YAML reader (libyaml when present) that rejects duplicate keys and remembers key lines."""
from __future__ import annotations

from typing import Any

import yaml

try:
    _Base: type = yaml.CSafeLoader
except AttributeError:  # PyYAML built without libyaml
    _Base = yaml.SafeLoader


class LineDict(dict):
    """A mapping that remembers the 1-based line of each key."""

    __slots__ = ("lines", "line", "words")

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[Any, int] = {}
        self.line: int | None = None
        self.words: dict[Any, str] = {}  # the text of values YAML read as booleans (yes, on)


class DuplicateKeyError(ValueError):
    def __init__(self, key: object, line: int, first_line: int) -> None:
        super().__init__(f"duplicate key {key!r} (first defined on line {first_line})")
        self.key = key
        self.line = line


class AliasBombError(ValueError):
    """Aliases that would expand into more values than any pipeline needs."""


# Values that aliases may add beyond those written out: generous for shared defaults, far
# below what a "billion laughs" document expands to.
MAX_ALIAS_VALUES = 100_000


class _Loader(_Base):  # type: ignore[misc,valid-type]
    pass


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in result.lines:
            raise DuplicateKeyError(key, line, result.lines[key])
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_scalars = yaml.constructor.SafeConstructor()


class _Composer(_Base):  # type: ignore[misc,valid-type]
    """libyaml's composer with a leaner tag resolver (no path resolvers, first-char lookup)."""

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode:
            if implicit[0]:
                table = self.yaml_implicit_resolvers
                for tag, regexp in table.get(value[:1], ()):
                    if regexp.match(value):
                        return tag
                for tag, regexp in table.get(None, ()):
                    if regexp.match(value):
                        return tag
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


class _Unusual(Exception):
    """A construct the fast path leaves to PyYAML's full constructor (merge keys, tags)."""


def _convert(node: yaml.Node) -> Any:
    tag = node.tag
    if tag == _STR:
        return node.value
    if tag == _MAP:
        result = LineDict()
        result.line = node.start_mark.line + 1
        lines = result.lines
        for key_node, value_node in node.value:
            key = _convert(key_node)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise DuplicateKeyError(key, line, lines[key])
            result[key] = _convert(value_node)
            lines[key] = line
            if value_node.tag == _BOOL:
                result.words[key] = value_node.value
        return result
    if tag == _SEQ:
        return [_convert(item) for item in node.value]
    if tag == _INT:
        value = node.value
        return int(value) if value.lstrip("+-").isdigit() else _scalars.construct_yaml_int(node)
    if tag == _BOOL:
        return _scalars.construct_yaml_bool(node)
    if tag == _NULL:
        return None
    if tag == _FLOAT:
        return _scalars.construct_yaml_float(node)
    if tag == _TIMESTAMP:
        return _scalars.construct_yaml_timestamp(node)
    raise _Unusual(tag)


def load_yaml(text: str) -> Any:
    """Parse one YAML document; raises ``yaml.YAMLError`` or ``DuplicateKeyError``.

    libyaml composes the node tree and a small converter builds the values, several times
    faster than PyYAML's generic constructor; anything unusual goes through that constructor.
    """
    node = yaml.compose(text, Loader=_Composer)
    if node is None:
        return None
    if "&" in text:  # no anchor, no alias
        _check_expansion(node)
    try:
        return _convert(node)
    except _Unusual:
        return yaml.load(text, Loader=_Loader)


def _check_expansion(root: yaml.Node) -> None:
    """Raise ``AliasBombError`` when aliases expand to too many values, or refer to themselves.

    Sizes are counted over the composed node graph, where an alias is a shared node, so the
    count costs one visit per node however far the aliases would expand.
    """
    sizes: dict[int, int] = {}
    distinct = 0
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        nonlocal distinct
        key = id(node)
        known = sizes.get(key)
        if known is not None:
            return known
        if key in active:
            raise AliasBombError(f"an alias at line {node.start_mark.line + 1} refers to a value "
                                 "that holds it; remove the recursive alias")
        total = 1
        if isinstance(node.value, list):
            active.add(key)
            for item in node.value:
                if isinstance(item, tuple):
                    total += size(item[0]) + size(item[1])
                else:
                    total += size(item)
            active.discard(key)
        distinct += 1
        sizes[key] = total
        return total

    total = size(root)
    if total - distinct > MAX_ALIAS_VALUES:
        raise AliasBombError(f"YAML aliases expand to more than {MAX_ALIAS_VALUES} values "
                             f"({total} in all); write the values out or use fewer aliases")


def error_line(exc: yaml.YAMLError) -> int | None:
    problem = getattr(exc, "problem_mark", None)
    context = getattr(exc, "context_mark", None)
    # At the end of the stream the problem mark is past the last line; where the unfinished
    # construct (a quote, a flow mapping) started is what the user needs.
    if context is not None and "end of stream" in str(getattr(exc, "problem", "")):
        return context.line + 1
    mark = problem or context
    return mark.line + 1 if mark is not None else None


def error_text(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    if problem:
        return f"{context}, {problem}" if context else str(problem)
    return str(exc).splitlines()[0]
