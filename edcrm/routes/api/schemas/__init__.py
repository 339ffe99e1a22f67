"""The JSON bodies of the API, declared once: requests are validated against these models and answers
are checked against them, and the OpenAPI document (edcrm.routes.api.document) is generated from them.

One module per resource (auth, leads, imports, recordings, jobs, meta), on what base has: Answer and
the error answer. Request models are built from the strict field types of edcrm.routes.api.inputs; the
query-string models and cursors are beside them. A model's class name is its name in the document, so
no two modules here name a model alike.
"""
