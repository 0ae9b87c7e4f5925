ALTER TABLE "sandboxes" ADD COLUMN "network" jsonb;--> statement-breakpoint
ALTER TABLE "sandboxes" ADD COLUMN "internet_access" boolean;