// Loaded after require.js and before the ipywidgets HTML manager, on pages that hold widgets.
(function () {
  // 1. The bundled stylesheets fetch their icon fonts from the folder of their AMD module's address,
  //    relative to the page: the folder of "@jupyter-widgets/html-manager/dist/libembed-amd" and
  //    that of "@jupyter-widgets/html-manager" (whose Font Awesome 4 rules also match the theme's
  //    icons). Point both at the fonts the book serves beside this file.
  var here = document.currentScript.src.replace(/[^/]*$/, "");
  window.require.config({
    paths: {
      "@jupyter-widgets/html-manager/dist": here + "fonts",
      "@jupyter-widgets/html-manager": here + "fonts/html-manager",
    },
  });

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
