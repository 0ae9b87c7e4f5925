CREATE TABLE "template_build_files" (
	"team_id" text NOT NULL,
	"hash" text NOT NULL,
	"content" "bytea" NOT NULL,
	"size_bytes" integer NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "template_build_files_team_id_hash_pk" PRIMARY KEY("team_id","hash")
);
--> statement-breakpoint
CREATE TABLE "template_builds" (
	"id" text PRIMARY KEY NOT NULL,
	"template_id" text NOT NULL,
	"team_id" text NOT NULL,
	"status" text NOT NULL,
	"host_id" text,
	"tags" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"vcpus" integer NOT NULL,
	"memory_mb" integer NOT NULL,
	"spec" jsonb,
	"logs" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"cached_steps" jsonb DEFAULT '[]'::jsonb NOT NULL,
	"error_message" text,
	"error_step" integer,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "templates" (
	"id" text PRIMARY KEY NOT NULL,
	"team_id" text NOT NULL,
	"alias" text NOT NULL,
	"public" boolean DEFAULT false NOT NULL,
	"vcpus" integer NOT NULL,
	"memory_mb" integer NOT NULL,
	"current_build_id" text,
	"host_id" text,
	"build_count" integer DEFAULT 0 NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "template_build_files" ADD CONSTRAINT "template_build_files_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "template_builds" ADD CONSTRAINT "template_builds_template_id_templates_id_fk" FOREIGN KEY ("template_id") REFERENCES "public"."templates"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "template_builds" ADD CONSTRAINT "template_builds_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "template_builds" ADD CONSTRAINT "template_builds_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "templates" ADD CONSTRAINT "templates_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "templates" ADD CONSTRAINT "templates_host_id_hosts_id_fk" FOREIGN KEY ("host_id") REFERENCES "public"."hosts"("id") ON DELETE set null ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "template_builds_template_created_idx" ON "template_builds" USING btree ("template_id","created_at");--> statement-breakpoint
CREATE INDEX "template_builds_status_idx" ON "template_builds" USING btree ("status");--> statement-breakpoint
CREATE UNIQUE INDEX "templates_team_alias_idx" ON "templates" USING btree ("team_id","alias");--> statement-breakpoint
CREATE INDEX "templates_public_alias_idx" ON "templates" USING btree ("alias") WHERE "templates"."public";