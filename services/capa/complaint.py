"""The complaint as a responsible unit sees it on its action request (P-3.3, P-5.3.2).

P-5.3.2 has the unit work "with the same attachments" as Quality: what the product
was, what went wrong, Quality's preliminary cause and the evidence. Only the
customer's name travels: Sales alone talks to the customer (P-3.1).
"""

from pydantic import BaseModel, Field

from shared.contracts import EvidenceAdded, ResponsibilityAssigned
from shared.vocabulary import AttachmentMeta, Product, ReturnedSample, Severity


class ComplaintContext(BaseModel):
    """What the complaint is about; empty for requests opened before it was carried."""

    customer_name: str | None = Field(None, examples=["Shenzhen Bright Motors Co."])
    severity: Severity | None = None
    product: Product | None = Field(None, description="Code, name, lot, order, delivery note")
    quantity_affected: int | None = None
    description: str | None = Field(None, description="The customer's complaint")
    defect_code: str | None = Field(None, examples=["D03"])
    defect_name: str | None = None
    preliminary_cause: str | None = Field(None, description="Quality's cause analysis")
    attachments: list[AttachmentMeta] = Field(
        default_factory=list, description="Photos and documents: name, type, size, sha256")
    samples: list[ReturnedSample] = Field(
        default_factory=list, description="Nonconforming samples the customer returned")

    @classmethod
    def of(cls, assigned: ResponsibilityAssigned) -> "ComplaintContext":
        return cls(customer_name=assigned.customer_name, severity=assigned.severity,
                   product=assigned.product or _product_of_code(assigned.product_code),
                   quantity_affected=assigned.quantity_affected,
                   description=assigned.description, defect_code=assigned.defect_code,
                   defect_name=assigned.defect_name,
                   preliminary_cause=assigned.preliminary_cause,
                   attachments=list(assigned.attachments), samples=list(assigned.samples))

    def add_evidence(self, evidence: EvidenceAdded) -> dict[str, str]:
        """Add what Sales added later (each once); returns what was new, for the history."""
        added: dict[str, str] = {}
        if evidence.attachment is not None and evidence.attachment not in self.attachments:
            self.attachments.append(evidence.attachment)
            added["attachment"] = evidence.attachment.filename
        if evidence.sample is not None and evidence.sample not in self.samples:
            self.samples.append(evidence.sample)
            added["sample"] = evidence.sample.location
        return added


def _product_of_code(code: str | None) -> Product | None:
    """Events from before the full product travelled name its code only."""
    return Product(code=code) if code else None
