"""YAML loading that keeps line numbers, with PyYAML's safe constructors only.

Rules and config files are operator input: every error must name the file and line, and no
YAML tag may build a Python object (`!!python/object/apply` is a ConstructorError here).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditor.errors import InputError
from auditor.inputfile import MAX_CONFIG_FILE, read_text

if TYPE_CHECKING:
    import yaml


class LineDict(dict[str, Any]):
    """A mapping that remembers the line of itself and of each of its keys (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


@functools.cache
def _line_loader() -> type[yaml.SafeLoader]:
    """PyYAML's SafeLoader that builds LineDicts; PyYAML is imported on first use, since an
    audit whose rules come from the cache and that has no config file never parses YAML."""
    import yaml

    # libyaml's parser when PyYAML was built with it (about 5x faster on the rule catalog);
    # the constructors, and so the safety, are SafeLoader's either way.
    base: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

    class _LineLoader(base):  # type: ignore[valid-type,misc]
        pass

    def construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
        loader.flatten_mapping(node)
        out = LineDict()
        out.line = node.start_mark.line + 1
        out.key_lines = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise yaml.constructor.ConstructorError(
                    None, None, f"keys must be strings, got {key!r}", key_node.start_mark
                )
            if key in out:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            out[key] = loader.construct_object(value_node, deep=True)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out

    def plain_number(loader: _LineLoader, node: yaml.ScalarNode) -> int | float:
        """YAML 1.1 reads `1_000`, `0x10`, `010` (8), `1:30` (90) and `.nan` as numbers; a
        threshold or a port is written in plain decimal, so any other form is refused."""
        from auditor.userinput import plain_yaml_number

        try:
            return plain_yaml_number(str(node.value), node.tag.endswith(":float"))
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(None, None, str(exc), node.start_mark) from None

    _LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    _LineLoader.add_constructor("tag:yaml.org,2002:int", plain_number)
    _LineLoader.add_constructor("tag:yaml.org,2002:float", plain_number)
    return _LineLoader


def load_yaml(path: Path, text: str | None = None) -> Any:
    """Parse one YAML document; errors become InputError(path, line, problem)."""
    if text is None:
        try:
            text = read_text(path, MAX_CONFIG_FILE)
        except FileNotFoundError:
            raise InputError(path, None, "no such file") from None
        except UnicodeDecodeError:
            raise InputError(path, None, "not UTF-8 text") from None
        except OSError as exc:
            raise InputError(path, None, exc.strerror or str(exc)) from None
    loader = _line_loader()
    import yaml

    try:
        return yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "invalid YAML"
        raise InputError(path, line, problem) from None
    except yaml.YAMLError as exc:
        raise InputError(path, None, str(exc).splitlines()[0]) from None
    except RecursionError:
        raise InputError(path, None, "nested too deeply") from None
    except (ValueError, OverflowError) as exc:
        raise InputError(path, None, f"bad value: {exc}") from None
