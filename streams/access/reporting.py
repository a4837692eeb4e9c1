"""Django's error reports (the DEBUG page, admin mails) with URL passwords and API keys masked.

Django hides settings whose names look secret (KEY, PASS, ...) but shows REDIS_URL and the
channel layer's `address`, passwords included, and shows every frame's local variables.
The filter masks each setting and each local variable's text; the reporter masks the
whole page once more, which also covers the exception's own message.
"""

from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

from ..redact import redact


class _Redacted:
    """A value shown by its redacted pretty-printed form (the report pprint()s frame variables)."""

    __slots__ = ("text",)

    def __init__(self, value):
        from pprint import pformat

        try:
            self.text = redact(pformat(value))
        except Exception as exc:  # a broken __repr__ must not break the report
            self.text = f"<unprintable {type(value).__name__}: {type(exc).__name__}>"

    def __repr__(self) -> str:
        return self.text


class RedactingReporterFilter(SafeExceptionReporterFilter):
    """Settings and frame variables with URL passwords and API keys masked."""

    def cleanse_setting(self, key, value):
        """Django's cleansing, then any string left is redacted."""
        cleansed = super().cleanse_setting(key, value)
        return redact(cleansed) if isinstance(cleansed, str) else cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        """Each variable shown by its redacted text."""
        variables = super().get_traceback_frame_variables(request, tb_frame)
        return [(name, _Redacted(value)) for name, value in variables]


class RedactingExceptionReporter(ExceptionReporter):
    """The report, HTML and text, redacted as a whole."""

    def get_traceback_html(self):
        """The HTML page, redacted."""
        return redact(str(super().get_traceback_html()))

    def get_traceback_text(self):
        """The text page, redacted."""
        return redact(str(super().get_traceback_text()))
