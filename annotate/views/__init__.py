"""Pages: thin wrappers that parse a request, call one service or selector, and render.

`worker` holds the crowd's pages, `requester` the staff-only ones, `comparison` the agreement dashboards;
each provider with pages of its own keeps them in its folder (`annotate.providers.mturk.views`).
"""
