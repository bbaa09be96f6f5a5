/**
 * The credential of an `Authorization: Bearer <credential>` header, for the `bearer` identity
 * source and the admin token alike: the scheme case-insensitively, then everything after the
 * blanks that follow it, surrounding blanks trimmed. Inner spaces are kept (a key with spaces is
 * that key, as docs/reference.md says of identity values), so both readers agree on every header.
 * Undefined when the header is absent, of another scheme, or carries nothing.
 */
export function bearerCredential(header: string | null | undefined): string | undefined {
  const m = header ? /^Bearer[ \t]+(\S.*)$/i.exec(header.trim()) : null;
  return m ? (m[1] as string) : undefined;
}
