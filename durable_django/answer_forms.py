"""Django forms that answer a wait for input, one per input kind, as the admin's inbox shows them.

:func:`answer_form` builds the form of a :class:`~durable_django.models.Wait`; its
:meth:`AnswerForm.answer` is the dict handed to :func:`durable_django.resume.provide_input`, which
validates it once more (with :func:`durable_django.waits.validate_answer`) and says which field is
wrong. Field names are those of the answer (``approved``, ``comment``, ``choice``, ``text`` or the
form's own fields), with the prefix ``answer`` in the HTML so that no declared field can collide
with the page's own inputs.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .models import InputKind, Wait

PREFIX = "answer"

#: The approval's two buttons: the name they submit and the value of each.
DECISION = "approved"
APPROVE, REJECT = "approve", "reject"


class AnswerForm(forms.Form):
    """The answer to one wait for input."""

    input_kind = ""
    required_css_class = "required"

    def __init__(self, wait: Wait, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("prefix", PREFIX)
        super().__init__(*args, **kwargs)
        self.wait = wait

    def answer(self) -> dict[str, Any]:
        """The answer as :func:`~durable_django.resume.provide_input` takes it (the form is valid)."""
        return dict(self.cleaned_data)

    def add_answer_error(self, field: str | None, message: str) -> None:
        """An error of the engine's validation: on its field when the form has one, else on the form."""
        self.add_error(field if field in self.fields else None, message)


class ApprovalForm(AnswerForm):
    """Approve or Reject (two submit buttons) and a comment."""

    input_kind = InputKind.APPROVAL
    approved = forms.TypedChoiceField(
        label=_("Decision"),
        choices=((APPROVE, _("Approve")), (REJECT, _("Reject"))),
        coerce=lambda value: value == APPROVE,
        widget=forms.HiddenInput,
        error_messages={"required": _("Choose Approve or Reject.")},
    )
    comment = forms.CharField(label=_("Comment"), required=False, widget=forms.Textarea(attrs={"rows": 3}))

    # The buttons carry the decision: the hidden input is not rendered (see the template).
    buttons = ((APPROVE, _("Approve")), (REJECT, _("Reject")))


class ChoiceForm(AnswerForm):
    input_kind = InputKind.CHOICE

    def __init__(self, wait: Wait, *args: Any, **kwargs: Any) -> None:
        super().__init__(wait, *args, **kwargs)
        choices = [(str(choice), str(choice)) for choice in (wait.spec or {}).get("choices", [])]
        self.fields["choice"] = forms.ChoiceField(label=_("Choice"), choices=choices, widget=forms.RadioSelect)


class TextForm(AnswerForm):
    input_kind = InputKind.TEXT
    text = forms.CharField(label=_("Answer"), widget=forms.Textarea(attrs={"rows": 5}), strip=False)


class DateInput(forms.DateInput):
    input_type = "date"


class FieldsForm(AnswerForm):
    """The declared fields of a ``form`` input, each as the form field of its type."""

    input_kind = InputKind.FORM

    def __init__(self, wait: Wait, *args: Any, **kwargs: Any) -> None:
        super().__init__(wait, *args, **kwargs)
        declared = (wait.spec or {}).get("fields", {})
        # jsonb keeps no key order: the declared order is stored beside the fields.
        order = [name for name in (wait.spec or {}).get("order", []) if name in declared]
        for name in [*order, *(name for name in declared if name not in order)]:
            self.fields[name] = form_field(declared[name])

    def answer(self) -> dict[str, Any]:
        answer: dict[str, Any] = {}
        for name, value in self.cleaned_data.items():
            if hasattr(value, "isoformat"):
                value = value.isoformat()
            elif value == "":
                value = None
            answer[name] = value
        return answer


def form_field(spec: dict[str, Any]) -> forms.Field:
    """The form field of one declared field: integer, number, string, boolean or date."""
    kind = spec.get("type", "string")
    options: dict[str, Any] = {
        "label": spec.get("label") or "",
        "required": bool(spec.get("required", True)),
        "help_text": spec.get("help", ""),
    }
    if kind == "integer":
        return forms.IntegerField(**options)
    if kind == "number":
        return forms.FloatField(**options)
    if kind == "boolean":
        # A checkbox always gives a value (ticked or not), so the answer is never missing.
        options["required"] = False
        return forms.BooleanField(**options)
    if kind == "date":
        return forms.DateField(widget=DateInput, **options)
    return forms.CharField(**options)


FORMS: dict[str, type[AnswerForm]] = {
    InputKind.APPROVAL: ApprovalForm,
    InputKind.CHOICE: ChoiceForm,
    InputKind.TEXT: TextForm,
    InputKind.FORM: FieldsForm,
}


def answer_form(wait: Wait, data: Any = None) -> AnswerForm:
    """The form answering ``wait`` (bound to ``data`` when given); a text form for an unknown kind."""
    return FORMS.get(wait.input_kind, TextForm)(wait, data)
