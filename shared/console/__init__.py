"""The debug console's node side (docs/console.md); its server is in trigger_api/console/."""
