"""The kit every service stands on: contracts, messaging, storage, HTTP plumbing."""
