"""The DAG graph widget: paints a layout from runner.graph line by line, node to node keys."""
from __future__ import annotations

from typing import Any, ClassVar

from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size, Spacing
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from flowtui.app.render import state_colour
from flowtui.runner.text import GLYPHS
from flowtui.runner.graph import GraphLayout

# j/k walk the rows (every task is one row, so repeated j reaches every task); h/left and right
# follow a line to the nearest upstream or downstream task. `l` stays "logs" as on every screen.
GRAPH_KEYS = ("j/k or ↓/↑ next/previous task · h/← upstream · → downstream · "
              "Home/End first/last · PgUp/PgDn a page")


class GraphView(ScrollView, can_focus=True):
    """A scrollable drawing of a DAG; the selected task is the one task keys act on."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down,j", "move(1)", "Next task", show=False),
        Binding("up,k", "move(-1)", "Previous task", show=False),
        Binding("left,h", "follow('up')", "Upstream task", show=False),
        Binding("right", "follow('down')", "Downstream task", show=False),
        Binding("home", "jump(0)", "First task", show=False),
        Binding("end", "jump(-1)", "Last task", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"graph-view--edge", "graph-view--cursor",
                                             "graph-view--critical"}

    class NodeSelected(Message):
        def __init__(self, task_id: str) -> None:
            super().__init__()
            self.task_id = task_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.graph: GraphLayout | None = None
        self.states: dict[str, str] = {}
        self.critical: set[str] = set()
        self.outlets: dict[str, list[str]] = {}  # task -> the datasets it writes
        self.selected: str | None = None

    # -- data ------------------------------------------------------------------------------
    def show_graph(self, graph: GraphLayout, states: dict[str, str], critical: set[str],
                   prefer: str | None = None,
                   outlets: dict[str, list[str]] | None = None) -> None:
        """Paint ``graph`` with live states (and each task's outlets at the end of its row);
        the selection stays on its task when it still exists, else goes to ``prefer`` or the
        first task."""
        self.graph, self.states, self.critical = graph, states, critical
        self.outlets = outlets or {}
        widest = max((len(self._outlet_text(t)) for t in self.outlets), default=0)
        self.virtual_size = Size(graph.width + 1 + widest, len(graph.rows))
        if self.selected not in graph.nodes:
            chosen = prefer if prefer in graph.nodes else (graph.rows[0] if graph.rows else None)
            self.select(chosen)
        self.refresh()

    def select(self, task_id: str | None) -> None:
        graph = self.graph
        if graph is None or task_id is None or task_id not in graph.nodes:
            return
        changed = task_id != self.selected
        self.selected = task_id
        node = graph.nodes[task_id]
        # Keep the node whole in view with room around it for the lines that come in and go
        # out (what the operator reads next), as much as the window allows.
        window = self.scrollable_content_region
        side = max(0, min(24, (window.width - node.width) // 2))
        rows = max(0, min(3, (window.height - 1) // 2))
        self.scroll_to_region(Region(node.x, node.row, node.width, 1),
                              spacing=Spacing(rows, side, rows, side), animate=False, force=True)
        self.refresh()
        if changed:
            self.post_message(self.NodeSelected(task_id))

    # -- keys ------------------------------------------------------------------------------
    def _row(self) -> int:
        graph = self.graph
        if graph is None or self.selected not in graph.nodes:
            return 0
        return graph.nodes[self.selected].row

    def action_move(self, step: int) -> None:
        if self.graph and self.graph.rows:
            row = max(0, min(len(self.graph.rows) - 1, self._row() + step))
            self.select(self.graph.rows[row])

    def action_jump(self, row: int) -> None:
        if self.graph and self.graph.rows:
            self.select(self.graph.rows[row])

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.scrollable_content_region.height - 1))

    def action_follow(self, way: str) -> None:
        graph = self.graph
        if graph is None or self.selected is None:
            return
        linked = (graph.upstream if way == "up" else graph.downstream).get(self.selected, [])
        if not linked:
            self.app.bell()
            return
        # The nearest row first: the line the eye follows from this node.
        here = self._row()
        self.select(min(linked, key=lambda t: (abs(graph.nodes[t].row - here), t)))

    # -- painting --------------------------------------------------------------------------
    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width
        graph = self.graph
        row = y + scroll_y
        if graph is None or row >= len(graph.rows):
            return Strip.blank(width, self.rich_style)
        text = self.row_text(row)
        strip = Strip(list(text.render(self.app.console, end="")), text.cell_len)
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def row_text(self, row: int) -> Text:
        """One row of the drawing: its lines, with its task's node painted over them."""
        graph = self.graph
        assert graph is not None
        task_id = graph.rows[row]
        node = graph.nodes[task_id]
        line = graph.lines[row]
        edge = self._style("graph-view--edge")
        text = Text(line[:node.x], style=edge)
        state = self.states.get(task_id, "none")
        critical = task_id in self.critical
        label_style = self._style("graph-view--critical") if critical else Style()
        if task_id == self.selected:
            label_style += self._style("graph-view--cursor")
        text.append("*" if critical else " ", style=label_style)
        text.append(GLYPHS.get(state, "?"), style=label_style + Style.parse(
            state_colour(self.app, state) or "none"))
        text.append(" " + node.label, style=label_style)
        text.append(line[node.x + node.width:], style=edge)
        if task_id in self.outlets:  # past the drawing's right edge: over no line
            text.append(" " * (graph.width - len(line)))
            text.append(self._outlet_text(task_id), style="dim")
        return text

    def _outlet_text(self, task_id: str) -> str:
        return "  ⇢ " + ", ".join(self.outlets.get(task_id, []))

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(name, partial=True)

    def plain(self) -> str:
        """The whole drawing as plain text (what a test or a copy reads)."""
        if self.graph is None:
            return ""
        return "\n".join(self.row_text(row).plain.rstrip() for row in range(len(self.graph.rows)))

    def on_resize(self, _event: Any) -> None:
        self.call_after_refresh(self._scroll_to_selected)

    def _scroll_to_selected(self) -> None:
        if self.selected is not None:
            self.select(self.selected)
