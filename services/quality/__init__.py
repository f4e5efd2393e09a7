"""Quality: Complaint Handling Forms: triage, cause analysis, responsibility, the 3-day
clock, verification, recurrence."""
