"""CAPA (responsible units and Quality): action requests to responsible units and
formal corrective and preventive actions."""
