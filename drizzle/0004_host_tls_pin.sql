ALTER TABLE "hosts" ADD COLUMN "tls_pin" text;--> statement-breakpoint
ALTER TABLE "hosts" ADD COLUMN "ca_pem" text;