// A virtualised list: only the rows in view (plus a margin) are in the DOM, absolutely placed
// in a spacer as tall as all rows; near the bottom it asks for more (the next cursor page).

export class VirtualList {
  constructor(container, { rowHeight = 30, overscan = 12, renderRow, onNearEnd }) {
    this.box = container;
    this.rowHeight = rowHeight;
    this.overscan = overscan;
    this.renderRow = renderRow;
    this.onNearEnd = onNearEnd;
    this.rows = [];
    this.more = false;
    this.first = -1;
    this.last = -1;
    this.spacer = document.createElement("div");
    this.spacer.className = "vspacer";
    this.nodes = new Map(); // row index -> its node, for the rows in the DOM
    this.box.append(this.spacer);
    this.frame = 0;
    this.box.addEventListener("scroll", () => this.schedule(), { passive: true });
  }

  set(rows, more) {
    this.rows = rows;
    this.more = more;
    this.first = this.last = -1;
    for (const node of this.nodes.values()) node.remove();
    this.nodes.clear();
    this.layout();
  }

  append(rows, more) {
    // rows already shown keep their index: nothing in view changes, the spacer grows
    this.rows = this.rows.concat(rows);
    this.more = more;
    this.layout();
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => { this.frame = 0; this.layout(); });
  }

  layout() {
    const h = this.rowHeight;
    this.spacer.style.height = `${this.rows.length * h}px`;
    const top = this.box.scrollTop, height = this.box.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / h) - this.overscan);
    const last = Math.min(this.rows.length, Math.ceil((top + height) / h) + this.overscan);
    if (first !== this.first || last !== this.last) {
      // Rows still in view keep their node; only rows entering the view are built.
      for (const [i, node] of this.nodes) {
        if (i < first || i >= last) { node.remove(); this.nodes.delete(i); }
      }
      const fresh = [];
      for (let i = first; i < last; i++) {
        if (this.nodes.has(i)) continue;
        const node = this.renderRow(this.rows[i], i);
        node.style.transform = `translateY(${i * h}px)`;
        this.nodes.set(i, node);
        fresh.push(node);
      }
      this.spacer.append(...fresh);
      this.first = first;
      this.last = last;
    }
    if (this.more && top + height >= this.rows.length * h - 20 * h) this.onNearEnd();
  }
}
