"""`rtk-export render DIR [--to SITE]`: the archive as a static, offline web site that is safe
to open although every word in it was typed by a stranger."""
