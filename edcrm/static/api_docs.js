// The /api/docs page: Swagger UI on the served OpenAPI document (a file, as the CSP has no inline script).
"use strict";
(function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    domNode: root,
    deepLinking: true,
    persistAuthorization: false,
  });
})();
