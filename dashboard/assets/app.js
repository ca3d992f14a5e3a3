// Chronos dashboard: theme, relative times, confirmations, and live updates over SSE.
// Loaded in <head> (no inline scripts: the CSP forbids them); DOM work waits for the document.
(function () {
  'use strict';
  var root = document.documentElement;
  var THEME_KEY = 'chronos-theme';
  function applyTheme(t) {
    if (t === 'light' || t === 'dark') root.setAttribute('data-theme', t);
    else root.removeAttribute('data-theme');
  }
  try { applyTheme(localStorage.getItem(THEME_KEY)); } catch (e) { /* storage off: follow the system */ }

  function $(sel, el) { return (el || document).querySelector(sel); }
  function $$(sel, el) { return Array.prototype.slice.call((el || document).querySelectorAll(sel)); }
  function fmt(n) { return Number(n).toLocaleString('en-US'); }

  // "3 min ago" / "in 20 s", refreshed every 10 s; the absolute time stays in the title.
  function rel(t) {
    var d = (Date.now() - t) / 1000, a = Math.abs(d), s;
    if (a < 5) return d >= 0 ? 'just now' : 'in a moment';
    if (a < 60) s = Math.round(a) + ' s';
    else if (a < 3600) s = Math.round(a / 60) + ' min';
    else if (a < 86400) s = Math.round(a / 3600) + ' h';
    else if (a < 86400 * 30) s = Math.round(a / 86400) + ' d';
    else return null;
    return d >= 0 ? s + ' ago' : 'in ' + s;
  }
  function relTimes(el) {
    $$('time[data-rel]', el).forEach(function (e) {
      var t = Date.parse(e.getAttribute('datetime'));
      var r = isNaN(t) ? null : rel(t);
      if (r) e.textContent = r;
    });
  }

  function flash(el) {
    el.classList.remove('flashed');
    void el.offsetWidth;
    el.classList.add('flashed');
  }

  // Regions: an element with data-region is re-rendered by fetching this page again and
  // taking the element with the same id from the answer. Throttled per region.
  // regionHtml: each region's markup as the server last sent it, so an answer that changes
  // nothing leaves the element (and a click or focus on it) alone.
  var regionBusy = {}, regionLast = {}, regionHtml = {};
  function refreshRegion(el, force) {
    var id = el.id;
    if (!id || regionBusy[id]) return;
    var min = parseInt(el.getAttribute('data-refresh-ms') || '1000', 10);
    var since = Date.now() - (regionLast[id] || 0);
    if (!force && since < min) {
      if (!regionBusy[id + ':timer']) {
        regionBusy[id + ':timer'] = setTimeout(function () { regionBusy[id + ':timer'] = null; refreshRegion(el, true); }, min - since);
      }
      return;
    }
    regionBusy[id] = true;
    regionLast[id] = Date.now();
    fetch(location.href, { credentials: 'same-origin', headers: { 'Accept': 'text/html' } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, 'text/html');
        var fresh = doc.getElementById(id);
        var cur = document.getElementById(id);
        if (fresh && cur) {
          if (regionHtml[id] === fresh.outerHTML) return;
          regionHtml[id] = fresh.outerHTML;
          cur.replaceWith(fresh);
          applyLatest(fresh);
          relTimes(fresh);
          bindForms(fresh);
        }
      })
      .catch(function () {})
      .then(function () { regionBusy[id] = false; });
  }
  // After a gap: now, and once more when the audit record has caught up with Redis.
  var resyncLater;
  function refreshAll() {
    $$('[data-region]').forEach(function (el) { refreshRegion(el); });
    clearTimeout(resyncLater);
    resyncLater = setTimeout(function () { $$('[data-region]').forEach(function (el) { refreshRegion(el, true); }); }, 1500);
  }
  function refreshOn(kind) {
    $$('[data-refresh-on]').forEach(function (el) {
      if (el.getAttribute('data-refresh-on').split(' ').indexOf(kind) >= 0) refreshRegion(el);
    });
  }

  // The newest status each task's events told, so a region fetched from a server whose audit
  // record still trails Redis does not put an older status back.
  var latest = {};
  function showStatus(row, s, a) {
    var b = $('[data-status]', row);
    if (b && b.textContent !== s) {
      b.textContent = s;
      b.className = 'badge s-' + s;
      flash(row);
    }
    var at = $('[data-attempts]', row);
    if (at && a && Number(at.textContent) < a) at.textContent = a;
  }
  function applyLatest(el) {
    $$('[data-task]', el).forEach(function (row) {
      var l = latest[row.getAttribute('data-task')];
      if (l) showStatus(row, l.s, l.a);
    });
  }
  // Regions that list dead tasks (the dead-letter groups) redraw when a task dies: now, and
  // twice more while the audit record they are read from catches up with Redis.
  var deadLater = [];
  function onDead() {
    refreshOn('dead');
    deadLater.forEach(clearTimeout);
    deadLater = [1500, 5000].map(function (ms) {
      return setTimeout(function () {
        $$('[data-refresh-on]').forEach(function (el) {
          if (el.getAttribute('data-refresh-on').split(' ').indexOf('dead') >= 0) refreshRegion(el, true);
        });
      }, ms);
    });
  }
  function onTasks(events) {
    var page = $('[data-task-page]');
    var mine = false, died = false;
    events.forEach(function (ev) {
      if (ev.s === 'dead') died = true;
      if (ev.s) {
        latest[ev.id] = { s: ev.s, a: ev.a };
        $$('[data-task="' + ev.id + '"]').forEach(function (row) { showStatus(row, ev.s, ev.a); });
      }
      if (page && page.getAttribute('data-task-page') === ev.id) mine = true;
    });
    if (mine) {
      // Now, and once more when the audit record (attempts, errors) has caught up.
      refreshRegion(page);
      clearTimeout(page._later);
      page._later = setTimeout(function () { var p = $('[data-task-page]'); if (p) refreshRegion(p, true); }, 1500);
    }
    refreshOn('tasks');
    if (died) onDead();
  }

  function onCounts(data) {
    var missing = false;
    (data.queues || []).forEach(function (q) {
      var row = document.querySelector('tr[data-queue="' + CSS.escape(q.name) + '"]');
      if (!row) { missing = true; return; }
      if (q.paused !== undefined && String(q.paused) !== row.getAttribute('data-paused')) missing = true;
      Object.keys(q).forEach(function (k) {
        if (k === 'name' || k === 'paused') return;
        var cell = row.querySelector('[data-k="' + k + '"]');
        if (!cell) return;
        var text = typeof q[k] === 'number' ? fmt(q[k]) : String(q[k]);
        var target = cell.querySelector('a') || cell;
        if (target.textContent !== text) {
          target.textContent = text;
          cell.classList.toggle('zero', q[k] === 0);
          if (k === 'dead') cell.classList.toggle('alert', q[k] > 0);
          flash(cell);
        }
      });
    });
    if (data.totals) {
      Object.keys(data.totals).forEach(function (k) {
        $$('[data-total="' + k + '"]').forEach(function (el) {
          var v = data.totals[k];
          var text = fmt(v);
          if (el.classList.contains('pill')) el.classList.toggle('hidden', v === 0);
          if (el.textContent !== text) { el.textContent = text; if (!el.classList.contains('pill')) flash(el); }
        });
      });
    } else {
      // A fast (Redis-only) frame: recompute the totals it covers from the rows.
      ['waiting', 'scheduled', 'running', 'retrying'].forEach(function (k) {
        var el = document.querySelector('.stat [data-total="' + k + '"]');
        if (!el) return;
        var sum = 0;
        $$('[data-k="' + k + '"]').forEach(function (c) { sum += Number((c.textContent || '0').replace(/,/g, '')) || 0; });
        var text = fmt(sum);
        if (el.textContent !== text) { el.textContent = text; flash(el); }
      });
    }
    if (missing && $('#queues-wrap')) refreshRegion($('#queues-wrap'), true);
    refreshOn('counts');
  }

  function onJob(j) {
    var el = document.querySelector('.job[data-job="' + j.id + '"]');
    if (!el) { if ($('#jobs')) refreshRegion($('#jobs'), true); return; }
    var p = $('progress', el);
    if (p) { p.max = Math.max(j.total, 1); p.value = j.total === 0 && j.finished ? 1 : j.processed; }
    var d = $('[data-processed]', el);
    if (d) d.textContent = fmt(j.processed);
    var det = $('[data-detail]', el);
    if (det) det.textContent = j.detail;
    var st = $('[data-state-text]', el);
    if (st) st.textContent = j.state_text;
    el.setAttribute('data-finished', String(j.finished));
    el.setAttribute('data-state', j.state);
    // A finished job's buttons (Stop) and the page's counts change: redraw the regions.
    if (j.finished && $('#jobs')) refreshRegion($('#jobs'), true);
    refreshOn('job');
  }

  var live, es, retryTimer;
  function setLive(state, label) {
    if (!live) return;
    live.setAttribute('data-state', state);
    var l = $('.label', live);
    if (l) l.textContent = label;
  }
  function connect() {
    if (es) es.close();
    var since = document.body.getAttribute('data-since');
    es = new EventSource('/events' + (since ? '?since=' + encodeURIComponent(since) : ''));
    es.addEventListener('open', function () { setLive('on', 'Live'); });
    es.addEventListener('hello', function () { setLive('on', 'Live'); });
    es.addEventListener('tasks', function (e) { onTasks(JSON.parse(e.data)); });
    es.addEventListener('counts', function (e) { onCounts(JSON.parse(e.data)); });
    es.addEventListener('created', function () {
      $$('[data-live-list]').forEach(function (el) { refreshRegion(el); });
    });
    es.addEventListener('job', function (e) { onJob(JSON.parse(e.data)); });
    es.addEventListener('resync', refreshAll);
    es.addEventListener('error', function () {
      setLive('off', 'Reconnecting…');
      // EventSource retries by itself after a dropped connection; after a refused one
      // (the server was down, or answered an error) it gives up: start over.
      if (es.readyState === EventSource.CLOSED) {
        clearTimeout(retryTimer);
        retryTimer = setTimeout(connect, 1500);
      }
    });
  }

  function bindForms(el) {
    $$('form[data-confirm]', el).forEach(function (f) {
      if (f._bound) return;
      f._bound = true;
      f.addEventListener('submit', function (e) {
        if (!confirm(f.getAttribute('data-confirm'))) e.preventDefault();
      });
    });
    $$('[data-autosubmit]', el).forEach(function (s) {
      if (s._bound) return;
      s._bound = true;
      s.addEventListener('change', function () { s.form.submit(); });
    });
  }

  document.addEventListener('DOMContentLoaded', function () {
    $$('[data-region]').forEach(function (el) { if (el.id) regionHtml[el.id] = el.outerHTML; });
    relTimes(document);
    setInterval(function () { relTimes(document); }, 10000);
    bindForms(document);
    var t = $('#theme');
    if (t) t.addEventListener('click', function () {
      var dark = root.getAttribute('data-theme') === 'dark' ||
        (!root.getAttribute('data-theme') && matchMedia('(prefers-color-scheme: dark)').matches);
      var next = dark ? 'light' : 'dark';
      applyTheme(next);
      try { localStorage.setItem(THEME_KEY, next); } catch (e) { /* not kept */ }
    });
    live = $('#live');
    if (live && window.EventSource) connect();
  });
})();
