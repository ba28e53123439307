// The desk's only script: live SLA countdowns and the dashboard's refresh. Pages work without it.
(function () {
  "use strict";
  var zh = document.body && document.body.dataset.lang === "zh";

  function span(seconds) {
    seconds = Math.floor(Math.abs(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    var u = zh ? ["天", "小时", "分", "秒"] : ["d", "h", "m", "s"];
    if (d) return d + u[0] + " " + h + u[1];
    if (h) return h + u[1] + " " + (m < 10 ? "0" : "") + m + u[2];
    if (m) return m + u[2];
    return s + u[3];
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll(".countdown[data-due]").forEach(function (el) {
      var due = Date.parse(el.dataset.due);
      if (isNaN(due)) return;
      var left = (due - now) / 1000;
      el.textContent = left >= 0 ? (zh ? "剩余 " : "in ") + span(left) : (zh ? "已超时 " : "overdue ") + span(left);
      el.classList.toggle("late", left < 0);
    });
  }

  function refreshBoard(board) {
    var every = parseInt(board.dataset.refresh, 10) * 1000 || 10000;
    setInterval(function () {
      fetch(board.dataset.src, {credentials: "same-origin", headers: {"Accept": "text/html"}})
        .then(function (r) {
          if (r.status !== 200 || r.redirected) { window.location.reload(); return null; }
          return r.text();
        })
        .then(function (html) { if (html !== null) { board.innerHTML = html; board.dataset.refreshed = String(Date.now()); } })
        .catch(function () { /* the next beat tries again */ });
    }, every);
  }

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    var board = document.getElementById("board");
    if (board) refreshBoard(board);
  });
})();
