"""What the e-mails and PDFs say, in each language the mailer writes (the partner's, from the
topology's ``language``). The templates hold the layout; every sentence and label is here, so
a language is added in one place and a missing phrase fails a test, not a partner's e-mail.

Phrases are ``str.format`` patterns over plain values; the HTML template escapes the result.
"""

from __future__ import annotations

from typing import Final

LANGUAGES: Final = ("en", "uk", "cs")

_EN = {
    "greeting": "Hello {partner},",
    "placed.subject": "Purchase order {order} from {sender}",
    "placed.intro": "{sender} orders the following from you.",
    "amended.subject": "Order {order} amended (revision {revision})",
    "amended.intro": "{sender} changed order {order}. These lines replace the previous ones.",
    "cancelled.subject": "Order {order} cancelled",
    "cancelled.intro": "{sender} cancelled order {order}. Nothing more will be delivered or "
                       "invoiced for it.",
    "comment.subject": "Order {order}: message from {author}",
    "comment.intro": "{author} ({sender}) wrote about order {order}:",
    "document.subject": "Order {order}: document {file}",
    "document.intro": "{sender} attached a document to order {order}: {file} ({size}).",
    "document.link": "It is too large to attach; download it here: {ref}",
    "shipment.subject": "Order {order}: goods dispatched",
    "shipment.intro": "{sender} dispatched goods of order {order}.",
    "other.subject": "{what} from {sender}",
    "other.intro": "{sender} sent you the following ({what}).",
    "attachments": "The order is attached as a PDF and as a UBL 2.1 Order (Peppol BIS "
                   "Ordering 3) that your own system can import.",
    "reply": "Answer this e-mail to write to {sender}: your reply appears as a comment on "
             "the order in their system.",
    "invite": "{sender} exchanges orders through boxbus. Set up your own box and their orders "
              "arrive in your system without e-mail, with everything sent so far: {url} (the "
              "link works once, until {until}).",
    "footer": "Sent by boxbus for {sender}.",
    "pdf.title": "Purchase order {order}",
    "label.order": "Order",
    "label.buyer": "Buyer",
    "label.supplier": "Supplier",
    "label.date": "Date",
    "label.delivery_by": "Delivery requested by",
    "label.delivery_address": "Delivery address",
    "label.notes": "Notes",
    "label.reason": "Reason",
    "label.revision": "Revision",
    "label.line": "#",
    "label.sku": "Article",
    "label.description": "Description",
    "label.quantity": "Quantity",
    "label.unit_price": "Unit price",
    "label.tax": "Tax",
    "label.net": "Net",
    "label.net_total": "Total before tax",
    "label.tax_total": "Tax",
    "label.total": "Total",
    "label.warehouse": "From warehouse",
    "label.carrier": "Carrier",
    "label.tracking": "Tracking number",
    "label.expected": "Expected",
    "label.page": "Page {page}",
}

_UK = {
    "greeting": "Добрий день, {partner}!",
    "placed.subject": "Замовлення постачальнику {order} від {sender}",
    "placed.intro": "{sender} замовляє у вас таке.",
    "amended.subject": "Замовлення {order} змінено (редакція {revision})",
    "amended.intro": "{sender} змінив замовлення {order}. Ці рядки замінюють попередні.",
    "cancelled.subject": "Замовлення {order} скасовано",
    "cancelled.intro": "{sender} скасував замовлення {order}. За ним більше нічого не "
                       "постачається й не виставляється рахунків.",
    "comment.subject": "Замовлення {order}: повідомлення від {author}",
    "comment.intro": "{author} ({sender}) пише щодо замовлення {order}:",
    "document.subject": "Замовлення {order}: документ {file}",
    "document.intro": "{sender} додав документ до замовлення {order}: {file} ({size}).",
    "document.link": "Він завеликий для вкладення; завантажте його тут: {ref}",
    "shipment.subject": "Замовлення {order}: товар відвантажено",
    "shipment.intro": "{sender} відвантажив товар за замовленням {order}.",
    "other.subject": "{what} від {sender}",
    "other.intro": "{sender} надсилає вам таке ({what}).",
    "attachments": "Замовлення додано як PDF і як UBL 2.1 Order (Peppol BIS Ordering 3), "
                   "який може імпортувати ваша власна система.",
    "reply": "Відповідайте на цей лист, щоб написати {sender}: ваша відповідь з'явиться як "
             "коментар до замовлення в їхній системі.",
    "invite": "{sender} обмінюється замовленнями через boxbus. Створіть власний бокс, і їхні "
              "замовлення надходитимуть у вашу систему без електронної пошти, разом з усім "
              "надісланим досі: {url} (посилання одноразове, діє до {until}).",
    "footer": "Надіслано boxbus від імені {sender}.",
    "pdf.title": "Замовлення постачальнику {order}",
    "label.order": "Замовлення",
    "label.buyer": "Покупець",
    "label.supplier": "Постачальник",
    "label.date": "Дата",
    "label.delivery_by": "Бажана дата доставки",
    "label.delivery_address": "Адреса доставки",
    "label.notes": "Примітки",
    "label.reason": "Причина",
    "label.revision": "Редакція",
    "label.line": "№",
    "label.sku": "Артикул",
    "label.description": "Найменування",
    "label.quantity": "Кількість",
    "label.unit_price": "Ціна за од.",
    "label.tax": "ПДВ",
    "label.net": "Сума без ПДВ",
    "label.net_total": "Разом без ПДВ",
    "label.tax_total": "ПДВ",
    "label.total": "Усього",
    "label.warehouse": "Зі складу",
    "label.carrier": "Перевізник",
    "label.tracking": "Номер відстеження",
    "label.expected": "Очікується",
    "label.page": "Сторінка {page}",
}

_CS = {
    "greeting": "Dobrý den, {partner},",
    "placed.subject": "Objednávka {order} od {sender}",
    "placed.intro": "{sender} u vás objednává následující.",
    "amended.subject": "Objednávka {order} změněna (revize {revision})",
    "amended.intro": "{sender} změnil objednávku {order}. Tyto řádky nahrazují předchozí.",
    "cancelled.subject": "Objednávka {order} zrušena",
    "cancelled.intro": "{sender} zrušil objednávku {order}. Nic dalšího se k ní nedodává ani "
                       "nefakturuje.",
    "comment.subject": "Objednávka {order}: zpráva od {author}",
    "comment.intro": "{author} ({sender}) píše k objednávce {order}:",
    "document.subject": "Objednávka {order}: dokument {file}",
    "document.intro": "{sender} přiložil k objednávce {order} dokument: {file} ({size}).",
    "document.link": "Je příliš velký pro přílohu; stáhněte si jej zde: {ref}",
    "shipment.subject": "Objednávka {order}: zboží odesláno",
    "shipment.intro": "{sender} odeslal zboží objednávky {order}.",
    "other.subject": "{what} od {sender}",
    "other.intro": "{sender} vám posílá následující ({what}).",
    "attachments": "Objednávka je přiložena jako PDF a jako UBL 2.1 Order (Peppol BIS "
                   "Ordering 3), který může načíst váš vlastní systém.",
    "reply": "Odpovězte na tento e-mail a napíšete {sender}: vaše odpověď se zobrazí jako "
             "komentář k objednávce v jejich systému.",
    "invite": "{sender} si vyměňuje objednávky přes boxbus. Založte si vlastní box a jejich "
              "objednávky budou přicházet do vašeho systému bez e-mailu, i se vším dosud "
              "odeslaným: {url} (odkaz platí jednou, do {until}).",
    "footer": "Odesláno službou boxbus za {sender}.",
    "pdf.title": "Objednávka {order}",
    "label.order": "Objednávka",
    "label.buyer": "Odběratel",
    "label.supplier": "Dodavatel",
    "label.date": "Datum",
    "label.delivery_by": "Požadované dodání",
    "label.delivery_address": "Dodací adresa",
    "label.notes": "Poznámky",
    "label.reason": "Důvod",
    "label.revision": "Revize",
    "label.line": "č.",
    "label.sku": "Kód zboží",
    "label.description": "Popis",
    "label.quantity": "Množství",
    "label.unit_price": "Cena za jedn.",
    "label.tax": "DPH",
    "label.net": "Bez DPH",
    "label.net_total": "Celkem bez DPH",
    "label.tax_total": "DPH",
    "label.total": "Celkem",
    "label.warehouse": "Ze skladu",
    "label.carrier": "Dopravce",
    "label.tracking": "Číslo zásilky",
    "label.expected": "Očekáváno",
    "label.page": "Strana {page}",
}

CATALOG: Final[dict[str, dict[str, str]]] = {"en": _EN, "uk": _UK, "cs": _CS}


class Phrases:
    """The phrases of one language: ``say("placed.subject", order=..., sender=...)``."""

    def __init__(self, language: str) -> None:
        if language not in CATALOG:
            raise ValueError(f"no phrases in language {language!r}; the mailer writes "
                             f"{', '.join(LANGUAGES)}")
        self.language = language
        self._phrases = CATALOG[language]

    def say(self, key: str, **values: object) -> str:
        return self._phrases[key].format(**values)

    def label(self, name: str) -> str:
        return self._phrases[f"label.{name}"]
