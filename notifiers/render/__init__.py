"""Alerts rendered into a `Message` for one destination: family, language, time zone, limits.

Templates are Jinja2 files named `<family>.<language>.title.j2` and
`<family>.<language>.body.j2` (family: plain, markdown, dingtalk, html, json;
language: en, zh). The built-in ones live in `notifiers/templates`; a file of
the same name in the configured `notifications.templates_dir` replaces just
that one. A family without its own title template (json) uses the plain one.

Why Jinja2 rather than `string.Template`: a grouped message is a loop over
alerts, optional fields (reason, ticket, suppression, link) need conditionals,
HTML needs autoescaping, and users' templates are configuration, not code, so
they run in Jinja's sandbox with `StrictUndefined` (a misspelt variable is an
error, not an empty string). Autoescaping is on only for HTML bodies: titles
are plain text everywhere (subjects, push titles), and markdown bodies get
values already escaped for markdown (`md_escape`), so a template cannot forget.

What a template sees (strings, already escaped for markdown bodies):
`count` (alerts in the message), `alerts` (the alerts listed; fewer than
`count` when cut to the body limit), `more` (how many were cut), `truncated`,
`alert` (the first one), `duplicates` (identical alerts not sent separately),
`severity`/`severity_label` (the highest), `rule`, `rule_name`, `host`, `span`,
`first_time`, `last_time`, `lookup` (a link or a `docktrail` command), `link`
(or none); bodies also get `title`, and json bodies `payload` (the data to
send). Each alert has the fields of `AlertView`.
"""

from notifiers.render.renderer import TEST_NOTICE, TEST_TITLE, Renderer
from notifiers.render.templates import check_templates, md_escape, sample_alert
from notifiers.render.views import AlertView
from notifiers.render.wording import (
    BODY_FORMATS,
    BUILTIN_DIR,
    FAMILIES,
    LANGUAGES,
    RULE_TEXT_ZH,
    SEVERITY_LABELS,
    TEMPLATE_NAMES,
    Language,
)

__all__ = [
    "BODY_FORMATS",
    "BUILTIN_DIR",
    "FAMILIES",
    "LANGUAGES",
    "RULE_TEXT_ZH",
    "SEVERITY_LABELS",
    "TEMPLATE_NAMES",
    "TEST_NOTICE",
    "TEST_TITLE",
    "AlertView",
    "Language",
    "Renderer",
    "check_templates",
    "md_escape",
    "sample_alert",
]
