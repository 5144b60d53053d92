// Loaded after require.js and before the ipywidgets HTML manager, on pages that hold widgets.
(function () {
  // 1. The manager's bundled stylesheet fetches its icon fonts from a folder named after its AMD
  //    module, relative to the page. Point that module at the fonts the book serves beside this file.
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  window.require.config({ paths: { "@jupyter-widgets/html-manager/dist": here + "fonts" } });

  // 2. The manager typesets widget labels with the MathJax 2 call
  //    MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the book loads MathJax 3, which has no
  //    Hub. Map that call onto MathJax 3: set as MathJax 3's configuration (this script runs before
  //    the deferred MathJax loads) and restored once MathJax 3 has replaced the global object.
  var hub = {
    Queue: function (command) {
      var element = Array.isArray(command) ? command[2] : null;
      var mj = window.MathJax;
      if (element && mj && typeof mj.typesetPromise === "function") {
        mj.typesetPromise([element]).catch(function () {});
      }
    },
  };
  var config = window.MathJax || {};
  var startup = config.startup || {};
  var ready = startup.ready;
  startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = hub;
  };
  config.startup = startup;
  config.Hub = hub;
  window.MathJax = config;
})();
