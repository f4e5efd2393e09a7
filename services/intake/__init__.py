"""Intake (Sales): the Customer Feedback Register: every feedback, its channel,
classification, evidence, replies and satisfaction."""
