"""(checks)"""
