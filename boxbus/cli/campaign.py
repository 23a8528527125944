"""``boxbus campaign``: mass mailings of a box to its contacts: ``preview`` one merged letter
(it fails on a merge field a contact lacks), ``send`` e-mails and printable letters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from boxbus.cli.analytics import service_dsn
from boxbus.cli.context import endpoints, serde_for, settings_from_env
from boxbus.cli.mailer import NamespaceOption, signing_key, smtp_server
from boxbus.cli.output import console, console_err, print_json
from bus.errors import ConfigError
from bus.settings import Settings

app = typer.Typer(help="Mass mailings: a letter template merged with a box's contacts.",
                  no_args_is_help=True)

BoxOption = Annotated[str, typer.Option("--box", help="The box whose contacts get it.")]
TemplateOption = Annotated[Path, typer.Option(
    "--template", help="The letter: first line 'Subject: ...', then the text (Jinja2: "
    "{{ contact.name }}, {{ sender }}, {{ unsubscribe_url }}, ...).")]
DatabaseOption = Annotated[str | None, typer.Option(
    "--database-url", help="The mailer's database (default: BOXBUS_DATABASE_URL, else "
    "<namespace>_mailer on the local stack).")]


async def _box(settings: Settings, kafka: Any, box: str) -> tuple[str, str]:
    """(region, company) of a box of the network."""
    from bus.topology import control

    network = control.network_of(await control.read_control(kafka, settings.topic_namespace))
    found = next((b for b in network.boxes if b.id == box), None)
    if found is None:
        raise ConfigError(f"box {box!r} is not in network {settings.topic_namespace!r}",
                          hint="check --box and --namespace")
    return found.region, found.company


@app.command("preview")
def preview(
    box: BoxOption,
    template: TemplateOption,
    contact: Annotated[str | None, typer.Option(help="This contact's letter (default: each "
                                                "is merged, the first shown).")] = None,
    namespace: NamespaceOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")
                        ] = False,
) -> None:
    """Merge the template with the box's contacts and show one letter; a field a contact
    lacks fails here, before anything is sent."""
    from connectors.mail.campaign import Template, contacts_of, render

    letter = Template.read(template)
    settings = settings_from_env(namespace)
    found = endpoints(settings)
    serde = serde_for(settings, found.registry_url)

    async def merged() -> tuple[int, Any]:
        region, company = await _box(settings, found.kafka, box)
        people = await contacts_of(found.kafka, serde, settings.topic_namespace, box, region)
        chosen = [c for c in people if contact is None or c.contact_id == contact]
        if not chosen:
            raise ConfigError(f"box {box!r} has no contact {contact!r} with an e-mail address"
                              if contact else f"box {box!r} has no contacts with an e-mail "
                              "address", hint="contacts come from the box's ContactUpserted "
                              "events")
        results = [render(letter, c, company, "preview", "https://example.invalid/unsubscribe")
                   for c in chosen]  # every contact: a missing field fails now
        return len(people), (chosen[0], results[0])

    count, (first, result) = asyncio.run(merged())
    if json_out:
        print_json({"contacts": count, "contact": first.contact_id, "to": first.email,
                    "subject": result.subject, "text": result.text})
        return
    console_err.print(f"{count} contact(s) merge without errors; the letter to "
                      f"{first.name} <{first.email}>:", highlight=False)
    console.print(f"Subject: {result.subject}\n\n{result.text}", highlight=False, markup=False)


@app.command("send")
def send(
    box: BoxOption,
    template: TemplateOption,
    name: Annotated[str, typer.Option("--name", help="The campaign's name: run again with "
                                      "the same name, it goes on where it stopped.")],
    spool: Annotated[Path, typer.Option(help="Print spool directory; each printer has a "
                                        "folder in it.")],
    printer: Annotated[str, typer.Option(help="The printer whose folder gets the letters.")
                       ] = "default",
    rate: Annotated[float, typer.Option(help="E-mails a second at most.", min=0.1)] = 20.0,
    database_url: DatabaseOption = None,
    namespace: NamespaceOption = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object for programs.")
                        ] = False,
) -> None:
    """Send the campaign: an e-mail to each contact not unsubscribed or bounced, and its
    PDF letter into the printer's spool folder; nothing twice, however often it is run."""
    from connectors.mail.campaign import Template, send_campaign

    letter = Template.read(template)
    settings = settings_from_env(namespace)
    found = endpoints(settings)
    serde = serde_for(settings, found.registry_url)
    key = signing_key(settings)
    smtp = smtp_server(settings)
    dsn = service_dsn(settings, database_url, "mailer", create=False,
                      first="run `boxbus mailer run` once first (it makes the mailer's "
                      "tables)")
    bars = Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), TimeElapsedColumn(), console=console_err,
                    disable=json_out)
    task = bars.add_task(f"campaign {name}", total=None)

    async def run() -> Any:
        region, company = await _box(settings, found.kafka, box)
        return await send_campaign(
            settings, found.kafka, serde, dsn, key, box=box, region=region, sender=company,
            name=name, template=letter, spool=spool, printer=printer, smtp=smtp, rate=rate,
            progress=lambda done, total: bars.update(task, completed=done, total=total))

    with bars:
        result = asyncio.run(run())
    if json_out:
        print_json(result.as_dict())
        return
    console.print(f"campaign {name}: {result.sent} e-mail(s) and {result.letters} letter(s) "
                  f"(in {spool / printer}), {result.already_sent} sent before, "
                  f"{result.suppressed} unsubscribed or bounced before, {result.bounced} "
                  f"bounced now, of {result.contacts} contact(s)", highlight=False)
