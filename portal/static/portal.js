// Grape portal: the live terminal of a deployment page. No framework, no
// build step. Log text is untrusted (terraform prints resource values), so it
// only ever becomes text nodes: this file never assigns markup.
(function () {
  'use strict';

  // ---- ANSI SGR → styled segments; the same rules as ansi.go --------------

  // xterm's default 16 colours (basicPalette in ansi.go).
  var PALETTE = [
    [0, 0, 0], [205, 0, 0], [0, 205, 0], [205, 205, 0], [0, 0, 238], [205, 0, 205], [0, 205, 205], [229, 229, 229],
    [127, 127, 127], [255, 0, 0], [0, 255, 0], [255, 255, 0], [92, 92, 255], [255, 0, 255], [0, 255, 255], [255, 255, 255]
  ];

  function xterm256(n) {
    if (n >= 232) {
      var v = 8 + (n - 232) * 10;
      return [v, v, v];
    }
    n -= 16;
    function level(x) { return x === 0 ? 0 : 55 + x * 40; }
    return [level(Math.floor(n / 36)), level(Math.floor(n / 6) % 6), level(n % 6)];
  }

  function nearestBasic(r, g, b) {
    var best = 0, bestDist = -1;
    for (var i = 0; i < PALETTE.length; i++) {
      var dr = r - PALETTE[i][0], dg = g - PALETTE[i][1], db = b - PALETTE[i][2];
      var d = dr * dr + dg * dg + db * db;
      if (bestDist < 0 || d < bestDist) { best = i; bestDist = d; }
    }
    return best;
  }

  function plain() { return { fg: -1, bg: -1, bold: false, dim: false, italic: false, underline: false }; }

  function styleClass(st) {
    var parts = [];
    if (st.bold) parts.push('ansi-b');
    if (st.dim) parts.push('ansi-d');
    if (st.italic) parts.push('ansi-i');
    if (st.underline) parts.push('ansi-u');
    if (st.fg >= 0) parts.push('ansi-f' + st.fg);
    if (st.bg >= 0) parts.push('ansi-bg' + st.bg);
    return parts.join(' ');
  }

  function applySGR(st, params) {
    if (params === '') return plain();
    var fields = params.split(';');
    function num(k) {
      if (k >= fields.length || fields[k] === '') return 0;
      if (!/^[0-9]+$/.test(fields[k])) return -1;
      var n = Number(fields[k]);
      return n > 255 ? -1 : n;
    }
    function extended(k) { // → [colour, fields used]
      switch (num(k)) {
        case 5: {
          var n = num(k + 1);
          if (n < 0) return [-1, 2];
          if (n < 16) return [n, 2];
          var rgb = xterm256(n);
          return [nearestBasic(rgb[0], rgb[1], rgb[2]), 2];
        }
        case 2: {
          var r = num(k + 1), g = num(k + 2), b = num(k + 3);
          if (r < 0 || g < 0 || b < 0) return [-1, 4];
          return [nearestBasic(r, g, b), 4];
        }
      }
      return [-1, 1];
    }
    for (var k = 0; k < fields.length; k++) {
      var n = num(k);
      if (n === 0) st = plain();
      else if (n === 1) st.bold = true;
      else if (n === 2) st.dim = true;
      else if (n === 3) st.italic = true;
      else if (n === 4) st.underline = true;
      else if (n === 22) { st.bold = false; st.dim = false; }
      else if (n === 23) st.italic = false;
      else if (n === 24) st.underline = false;
      else if (n >= 30 && n <= 37) st.fg = n - 30;
      else if (n === 39) st.fg = -1;
      else if (n >= 40 && n <= 47) st.bg = n - 40;
      else if (n === 49) st.bg = -1;
      else if (n >= 90 && n <= 97) st.fg = n - 90 + 8;
      else if (n >= 100 && n <= 107) st.bg = n - 100 + 8;
      else if (n === 38 || n === 48) {
        var ext = extended(k + 1);
        if (ext[0] >= 0) { if (n === 38) st.fg = ext[0]; else st.bg = ext[0]; }
        k += ext[1];
      }
    }
    return st;
  }

  function isControl(c) { return (c < 0x20 && c !== 0x09) || c === 0x7f; }

  // segments splits a line into [{text, class}]: SGR sequences set the
  // style, every other escape sequence and control character is dropped.
  function segments(line) {
    var out = [], st = plain(), text = '';
    function flush() {
      if (text === '') return;
      var c = styleClass(st);
      if (out.length && out[out.length - 1]['class'] === c) out[out.length - 1].text += text;
      else out.push({ text: text, 'class': c });
      text = '';
    }
    var i = 0, n = line.length;
    while (i < n) {
      var c = line.charCodeAt(i);
      if (c !== 0x1b) {
        if (!isControl(c)) text += line[i];
        i++;
        continue;
      }
      if (i + 1 >= n) { i++; continue; }
      var kind = line[i + 1];
      if (kind === '[') {
        var j = i + 2;
        while (j < n && line.charCodeAt(j) >= 0x30 && line.charCodeAt(j) <= 0x3f) j++;
        var params = line.slice(i + 2, j);
        while (j < n && line.charCodeAt(j) >= 0x20 && line.charCodeAt(j) <= 0x2f) j++;
        var f = j < n ? line.charCodeAt(j) : -1;
        if (j >= n) i = n;
        else if (f < 0x40 || f > 0x7e) i = j;
        else {
          if (f === 0x6d) { flush(); st = applySGR(st, params); }
          i = j + 1;
        }
      } else if (kind === ']') {
        var k = i + 2;
        while (k < n && line.charCodeAt(k) !== 0x07 && !(line.charCodeAt(k) === 0x1b && k + 1 < n && line[k + 1] === '\\')) k++;
        if (k >= n) i = n;
        else if (line.charCodeAt(k) === 0x07) i = k + 1;
        else i = k + 2;
      } else {
        var m = i + 1;
        while (m < n && line.charCodeAt(m) >= 0x20 && line.charCodeAt(m) <= 0x2f) m++;
        if (m < n && line.charCodeAt(m) >= 0x30 && line.charCodeAt(m) <= 0x7e) m++;
        i = m;
      }
    }
    flush();
    return out;
  }

  window.GrapeANSI = { segments: segments };

  // ---- the live terminal --------------------------------------------------

  // diagClass in ansi.go: a diagnostic's heading line is coloured.
  function diagClass(line) {
    if (line.indexOf('Error: ') === 0) return ' diag-error';
    if (line.indexOf('Warning: ') === 0) return ' diag-warning';
    return '';
  }

  function lineElement(l) {
    var div = document.createElement('div');
    div.className = 'line st-' + (/^[a-z]+$/.test(l.stream) ? l.stream : 'stdout') + diagClass(l.line);
    div.dataset.seq = String(l.seq);
    if (l.t) div.dataset.t = String(l.t);
    segments(l.line).forEach(function (s) {
      var node = document.createTextNode(s.text);
      if (s['class']) {
        var span = document.createElement('span');
        span.className = s['class'];
        span.appendChild(node);
        node = span;
      }
      div.appendChild(node);
    });
    return div;
  }

  // lineTime formats as the page's other times do, with milliseconds.
  function lineTime(ms) {
    var d = new Date(ms);
    if (isNaN(d.getTime())) return '';
    return d.toISOString().replace('T', ' ');
  }

  // seconds rounds to tenths in integers, so it never depends on how a
  // binary fraction rounds.
  function seconds(ms) {
    var tenths = Math.floor((Math.max(ms, 0) + 50) / 100);
    return Math.floor(tenths / 10) + '.' + (tenths % 10) + ' s';
  }

  function setText(root, field, text) {
    var target = root.querySelector('[data-field="' + field + '"]');
    if (target) target.textContent = text || '';
    return target;
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The same markup as the "diff" templates in deployment.html.
  function diffAttrRow(a) {
    var tr = el('tr');
    tr.appendChild(el('td', 'sym', a.symbol));
    var path = el('td');
    path.appendChild(el('code', '', a.path));
    tr.appendChild(path);
    var val = el('td');
    val.appendChild(el('code', '', (a.old ? a.old + ' → ' : '') + a.new));
    if (a.note) {
      val.appendChild(document.createTextNode(' '));
      val.appendChild(el('span', 'hint', '# ' + a.note));
    }
    tr.appendChild(val);
    return tr;
  }

  function diffTable(attrs) {
    var table = el('table', 'diff'), body = el('tbody');
    attrs.forEach(function (a) { body.appendChild(diffAttrRow(a)); });
    table.appendChild(body);
    return table;
  }

  function diffResource(r, open) {
    var d = el('details', 'diff-res');
    d.open = open;
    var sum = el('summary');
    sum.appendChild(el('span', 'act act-' + String(r.action).replace(/[^a-z]/g, ''), r.action));
    sum.appendChild(document.createTextNode(' '));
    sum.appendChild(el('code', '', r.address));
    if (r.reason) {
      sum.appendChild(document.createTextNode(' '));
      sum.appendChild(el('span', 'hint', r.reason));
    }
    d.appendChild(sum);
    if (r.attributes && r.attributes.length) {
      var wrap = el('div', 'scroll');
      wrap.appendChild(diffTable(r.attributes));
      d.appendChild(wrap);
    } else {
      d.appendChild(el('p', 'hint', 'no attribute changes'));
    }
    return d;
  }

  var lastDiff = null;
  function applyDiff(root, diff) {
    var box = root.querySelector('[data-field="diff"]');
    var key = JSON.stringify(diff);
    // Rebuild only on a change, so a person's open/closed choices stay.
    if (!box || key === lastDiff) return;
    if (lastDiff === null && box.firstChild) { lastDiff = key; return; } // rendered by the server
    lastDiff = key;
    while (box.firstChild) box.removeChild(box.firstChild);
    if (!diff) return;
    if (diff.drift && diff.drift.length) {
      box.appendChild(el('p', 'hint', 'Changed outside of Terraform:'));
      diff.drift.forEach(function (r) { box.appendChild(diffResource(r, diff.open)); });
    }
    if (diff.empty) box.appendChild(el('p', 'diff-none', 'No changes. Your infrastructure matches the configuration.'));
    (diff.resources || []).forEach(function (r) { box.appendChild(diffResource(r, diff.open)); });
    if (diff.outputs && diff.outputs.length) {
      var d = el('details', 'diff-res');
      d.open = true;
      d.appendChild(el('summary', '', 'Changes to outputs'));
      d.appendChild(diffTable(diff.outputs));
      box.appendChild(d);
    }
  }

  function applyState(st) {
    var root = document.getElementById('deployment');
    if (!root) return;
    // A drift check shows what it found, not a green "succeeded".
    var label = st.drift_status || st.status;
    var status = setText(root, 'status', label);
    if (status) status.className = 'status s-' + String(label).replace(/[^a-z_]/g, '');
    var checked = root.querySelector('[data-show="drift_status"]');
    if (checked) checked.textContent = 'drift check ' + st.status;
    setText(root, 'phase', st.phase);
    setText(root, 'waiting', st.waiting);
    setText(root, 'error', st.error);
    setText(root, 'cost', st.cost);
    setText(root, 'attempt', st.attempt + ' of ' + st.max_attempts + (st.agent ? ' on agent ' + st.agent : ''));
    setText(root, 'started_at', st.started_at);
    setText(root, 'finished_at', st.finished_at);
    setText(root, 'approved_by', st.approved_by);
    setText(root, 'review_comment', st.review_comment);
    applyDiff(root, st.diff);
    var outputs = root.querySelector('[data-field="outputs"]');
    if (outputs) {
      while (outputs.firstChild) outputs.removeChild(outputs.firstChild);
      (st.outputs || []).forEach(function (o) {
        var li = el('li');
        li.appendChild(el('code', '', o.name));
        li.appendChild(document.createTextNode(' = '));
        li.appendChild(el('code', o.sensitive ? 'sensitive' : '', o.value));
        outputs.appendChild(li);
      });
    }
    setText(root, 'plan', st.plan ? st.plan.text : '');
    var list = root.querySelector('[data-field="plan-resources"]');
    if (list) {
      while (list.firstChild) list.removeChild(list.firstChild);
      ((st.plan && st.plan.resources) || []).forEach(function (r) {
        var li = document.createElement('li');
        var act = document.createElement('span');
        act.className = 'act act-' + String(r.action).replace(/[^a-z]/g, '');
        act.textContent = r.action;
        var code = document.createElement('code');
        code.textContent = r.address;
        li.appendChild(act);
        li.appendChild(document.createTextNode(' '));
        li.appendChild(code);
        list.appendChild(li);
      });
    }
    setText(root, 'policy', st.policy ? st.policy.text : 'not evaluated');
    var verdicts = root.querySelector('[data-field="policy-verdicts"]');
    if (verdicts) {
      while (verdicts.firstChild) verdicts.removeChild(verdicts.firstChild);
      ((st.policy && st.policy.verdicts) || []).forEach(function (v) {
        var li = document.createElement('li');
        var kind = document.createElement('span');
        kind.className = 'verdict v-' + String(v.kind).replace(/[^a-z]/g, '');
        kind.textContent = v.kind;
        var where = document.createElement('span');
        where.className = 'hint';
        where.textContent = v.where || '';
        li.appendChild(kind);
        li.appendChild(document.createTextNode(' ' + v.msg + ' '));
        li.appendChild(where);
        verdicts.appendChild(li);
      });
    }
    var commit = root.querySelector('[data-field="commit"]');
    if (commit) {
      while (commit.firstChild) commit.removeChild(commit.firstChild);
      if (st.commit_sha) {
        var link;
        if (st.commit_url && /^https?:\/\//.test(st.commit_url)) {
          link = document.createElement('a');
          link.href = st.commit_url;
          link.rel = 'noreferrer noopener';
        } else {
          link = document.createElement('code');
        }
        link.textContent = st.commit_sha;
        commit.appendChild(link);
      }
    }
    root.querySelectorAll('[data-show]').forEach(function (el) {
      el.hidden = !st[el.dataset.show];
    });
  }

  function startTerminal(term) {
    var stateEl = document.getElementById('term-state');
    var follow = document.getElementById('term-follow');
    function setState(s) { if (stateEl) stateEl.textContent = s; }

    var rendered = term.querySelectorAll('.line');
    var last = rendered.length ? Number(rendered[rendered.length - 1].dataset.seq) || 0 : 0;

    // Follow the end unless the person scrolled up to read; scrolling back
    // to the bottom (or the button) follows again.
    var stick = true, lastTop = 0, scrollQueued = false;
    function atBottom() { return term.scrollHeight - term.scrollTop - term.clientHeight < 8; }
    term.addEventListener('scroll', function () {
      if (atBottom()) stick = true;
      else if (term.scrollTop < lastTop) stick = false;
      lastTop = term.scrollTop;
      if (follow) follow.hidden = stick;
    });
    function toBottom() {
      if (scrollQueued) return;
      scrollQueued = true;
      window.requestAnimationFrame(function () {
        scrollQueued = false;
        if (stick) term.scrollTop = term.scrollHeight;
      });
    }
    if (follow) {
      follow.addEventListener('click', function () {
        stick = true;
        follow.hidden = true;
        term.scrollTop = term.scrollHeight;
      });
    }
    term.scrollTop = term.scrollHeight;

    var ended = term.dataset.final === 'true';
    // Each line's time shows on hover; the title is made when needed. A
    // phase line ("phase: plan", from the agent) also says how long the
    // phase took: until the next phase line, or so far.
    term.addEventListener('mouseover', function (e) {
      var line = e.target.closest ? e.target.closest('.line') : null;
      if (!line || !line.dataset.t) return;
      var t = Number(line.dataset.t);
      var title = lineTime(t);
      var phase = /^phase: (\S+)$/.exec(line.classList.contains('st-agent') ? line.textContent : '');
      if (phase) {
        var end = null, done = false;
        for (var n = line.nextElementSibling; n; n = n.nextElementSibling) {
          if (n.dataset.t) end = Number(n.dataset.t);
          if (n.classList.contains('st-agent') && /^phase: /.test(n.textContent)) { done = true; break; }
        }
        // The last phase of a finished run ends with its last line.
        if (ended) done = true;
        if (end !== null) title += ' · phase ' + phase[1] + (done ? ' took ' : ' has run for ') + seconds(end - t) + (done ? '' : ' so far');
      }
      line.title = title;
    });

    if (term.dataset.final === 'true') {
      setState('finished');
      return;
    }
    // On a dropped connection EventSource reconnects by itself and sends the
    // id of the last line it got as Last-Event-ID; the server resumes there.
    var es = new EventSource(term.dataset.events + '?after=' + last);
    es.addEventListener('open', function () { setState('live'); });
    es.addEventListener('line', function (e) {
      var l = JSON.parse(e.data);
      if (l.seq <= last) return;
      last = l.seq;
      term.appendChild(lineElement(l));
      if (stick) toBottom();
    });
    es.addEventListener('status', function (e) {
      var st = JSON.parse(e.data);
      applyState(st);
      // A queued run has no output yet: say why the terminal is blank.
      if (es.readyState === EventSource.OPEN) setState(st.queued ? 'live: queued, waiting for an agent' : 'live');
    });
    es.addEventListener('end', function () {
      ended = true;
      es.close();
      setState('finished');
    });
    es.addEventListener('error', function () {
      setState(es.readyState === EventSource.CLOSED ? 'disconnected: reload the page' : 'reconnecting…');
    });
  }

  function init() {
    var term = document.getElementById('terminal');
    if (term) startTerminal(term);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
