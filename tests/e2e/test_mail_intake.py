"""P-5.1: complaints by e-mail and fax reach the Customer Feedback Register by themselves.

A real SMTP client sends to notify's inbound endpoint; intake registers the
feedback from the `mail.received` event; Sales then assigns the customer.
"""

import uuid
from email.message import EmailMessage

import aiosmtplib

from tests.e2e.flow import new_customer
from tests.support import eventually, ok


async def send(system, *, sender: str, subject: str, body: str,
               attachment: tuple[str, bytes, str] | None = None) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, "complaints@plant.example", subject
    msg.set_content(body)
    if attachment:
        name, data, ctype = attachment
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    await aiosmtplib.send(msg, hostname="127.0.0.1",
                          port=int(system.env["QMS_NOTIFY_INBOUND_PORT"]), timeout=20)


async def find(actors, text: str) -> dict | None:
    page = ok(await actors.sales.get("/feedback", params={"q": text}))
    return page["items"][0] if page["items"] else None


async def test_p_5_1_mail_from_an_unknown_sender_is_registered_for_sales_to_assign(system,
                                                                                   actors):
    tag = uuid.uuid4().hex[:10]
    photo = b"\x89PNG\r\n\x1a\n" + uuid.uuid4().bytes * 32
    await send(system, sender=f"buyer@{tag}.example", subject=f"Cracked housings {tag}",
               body="Lot L2026-11-03: 40 housings cracked at the boss.",
               attachment=("crack.png", photo, "image/png"))

    fb = await eventually(lambda: find(actors, tag), what="the mailed complaint in the register")
    assert fb["channel"] == "email" and fb["needs_triage"] is True
    assert fb["customer"]["id"] == "UNIDENTIFIED"
    assert fb["customer"]["email"] == f"buyer@{tag}.example"
    assert [a["filename"] for a in fb["attachments"]] == ["crack.png"]
    # Sales assigns the customer and classifies it; then it follows the procedure.
    classified = ok(await actors.sales.post(f"/feedback/{fb['id']}/classify", json={
        "customer": new_customer(), "category": "product_quality"}))
    assert classified["needs_triage"] is False and classified["category"] == "product_quality"

    # The customer's answer naming the register number joins the same record.
    await send(system, sender=f"buyer@{tag}.example",
               subject=f"Re: {fb['register_no']} more photos", body="Two more lots affected.")

    async def joined():
        history = ok(await actors.sales.get(f"/feedback/{fb['id']}/history"))
        return [h for h in history if h["action"] == "mail_received"]
    [entry] = await eventually(joined, what="the follow-up mail in the record's history")
    assert "Two more lots affected." in entry["note"]
    assert ok(await actors.sales.get("/feedback", params={"q": tag}))["total"] == 1


async def test_p_5_1_fax_forwarded_by_a_gateway_is_registered_as_a_fax(system, actors):
    tag = uuid.uuid4().hex[:10]
    await send(system, sender="gateway@fax.plant.example", subject=f"Fax from +86 755 {tag}",
               body="Please see the faxed complaint about late delivery.")
    fb = await eventually(lambda: find(actors, tag), what="the fax in the register")
    assert fb["channel"] == "fax"


async def test_p_5_1_the_same_mail_delivered_twice_is_registered_once(system, actors):
    tag = uuid.uuid4().hex[:10]
    msg = EmailMessage()
    msg["From"], msg["To"] = f"buyer@{tag}.example", "complaints@plant.example"
    msg["Subject"], msg["Message-ID"] = f"Short delivery {tag}", f"<{tag}@{tag}.example>"
    msg.set_content("Order SO-88123: 40 pieces missing.")
    port = int(system.env["QMS_NOTIFY_INBOUND_PORT"])
    # The sending server lost our 250 and sends the same message again.
    for _ in range(2):
        await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=20)

    await eventually(lambda: find(actors, tag), what="the mailed complaint in the register")
    async with system.client("notify", "sales") as notify_sales:
        [kept] = ok(await notify_sales.get("/mail", params={"from_address":
                                                            f"buyer@{tag}.example"}))["items"]
        mail = ok(await notify_sales.get(f"/mail/{kept['id']}"))
    # Both deliveries were answered 250 only after notify decided: the second added nothing.
    assert [h["action"] for h in mail["history"]] == ["received", "received_again"]
    assert ok(await actors.sales.get("/feedback", params={"q": tag}))["total"] == 1


async def test_p_5_1_an_out_of_office_opens_no_feedback_and_is_kept_for_sales(system, actors):
    tag = uuid.uuid4().hex[:10]
    sender = f"buyer@{tag}.example"
    away = EmailMessage()
    away["From"], away["To"] = sender, "complaints@plant.example"
    away["Subject"], away["Auto-Submitted"] = f"Out of office {tag}", "auto-replied"
    away.set_content("I am away until Monday.")
    await aiosmtplib.send(away, hostname="127.0.0.1",
                          port=int(system.env["QMS_NOTIFY_INBOUND_PORT"]), timeout=20)
    # The same person then writes for real: once that is registered, the first was not.
    await send(system, sender=sender, subject=f"Wrong labels {tag}", body="Lot L7 mislabelled.")
    await eventually(lambda: find(actors, f"Wrong labels {tag}"), what="the real complaint")

    assert ok(await actors.sales.get("/feedback", params={"q": "Out of office " + tag}))[
        "total"] == 0
    async with system.client("notify", "sales") as notify_sales:
        held = ok(await notify_sales.get("/mail", params={"held": "true",
                                                          "from_address": sender}))
    [kept] = held["items"]
    assert kept["subject"] == f"Out of office {tag}" and kept["auto_reply"] is True
