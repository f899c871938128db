/* durable_django: while a run is unfinished, its page refreshes its summary, flow graph and
   timeline every few seconds, in place (the scroll position and any form stay as they are).
   Once the run has finished, the page is loaded once more so that everything else is current. */
(function () {
    "use strict";
    var EVERY_MS = 3000;

    function part(doc) {
        return doc.getElementById("durable-live-part");
    }

    function refresh() {
        var current = part(document);
        if (!current || current.dataset.live !== "1") {
            return;
        }
        if (document.hidden) {
            window.setTimeout(refresh, EVERY_MS);
            return;
        }
        fetch(window.location.href, {credentials: "same-origin", headers: {"X-Requested-With": "fetch"}})
            .then(function (response) {
                if (!response.ok) {
                    throw new Error(response.status);
                }
                return response.text();
            })
            .then(function (html) {
                var fresh = part(new DOMParser().parseFromString(html, "text/html"));
                if (!fresh) {
                    return;
                }
                if (fresh.dataset.status !== current.dataset.status || fresh.dataset.live !== "1") {
                    // The run moved to another status: buttons, waits and attempts change too.
                    window.location.reload();
                    return;
                }
                current.replaceWith(fresh);
                window.setTimeout(refresh, EVERY_MS);
            })
            .catch(function () {
                window.setTimeout(refresh, EVERY_MS * 3);
            });
    }

    document.addEventListener("DOMContentLoaded", function () {
        window.setTimeout(refresh, EVERY_MS);
    });
})();
